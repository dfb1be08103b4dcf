import sys

import pytest

from ultrasound_transfer.study.sweep_units import (
    SHARED_GPU_ENVIRONMENT,
    GpuPlan,
    UnitFailed,
    executed_stages,
    restored_stages,
    run_command,
)

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


def test_each_worker_gets_a_gpu_and_a_shared_gpu_lets_its_units_take_memory_as_they_need_it(tmp_path):
    alone = GpuPlan(gpus=("0", "1"), workers=2)
    assert [alone.environment(i) for i in range(2)] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    shared = GpuPlan(gpus=("0", "1"), workers=5)
    assert [shared.environment(i)["CUDA_VISIBLE_DEVICES"] for i in range(5)] == ["0", "1", "0", "1", "0"]
    assert "up to 3 units on each" in shared.describe() and "one per worker" in alone.describe()
    # The variables reach the unit's process as the backends read them.
    script = ("import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['TF_FORCE_GPU_ALLOW_GROWTH'], "
              "os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
    assert run_command([sys.executable, "-c", script], tmp_path, "unit", shared.environment(3)) == "1 true false\n"
    assert set(SHARED_GPU_ENVIRONMENT) <= set(shared.environment(0)) and not set(SHARED_GPU_ENVIRONMENT) & set(
        alone.environment(0))
