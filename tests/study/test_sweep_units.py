import sys

import pytest

from ultrasound_transfer.study.sweep_units import UnitFailed, executed_stages, restored_stages, run_command

DVC_OUTPUT = """Stage 'check_params' didn't change, skipping
Running stage 'folds@phantom':
> python -m stages.folds phantom
Stage 'finetune@phantom-VGG16' is cached - skipping run, checking out outputs
Running stage 'features@phantom-VGG16':
"""


def test_dvc_output_says_what_ran_and_what_came_from_the_run_cache():
    assert executed_stages(DVC_OUTPUT) == ["folds@phantom", "features@phantom-VGG16"]
    assert restored_stages(DVC_OUTPUT) == ["finetune@phantom-VGG16"]


def test_a_failed_command_names_the_unit_and_shows_the_output_tail(tmp_path):
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(100))); sys.exit(3)"
    with pytest.raises(UnitFailed, match=r"(?s)sweep-ft0: phantom/VGG16: .*status 3.*line 99") as failure:
        run_command([sys.executable, "-c", script], tmp_path, "sweep-ft0: phantom/VGG16")
    assert "line 10\n" not in str(failure.value)
    assert run_command([sys.executable, "-c", "print('ok')"], tmp_path, "x") == "ok\n"
