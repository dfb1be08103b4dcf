import json

import pytest

from ultrasound_transfer.cli import run
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.study.protocols import PROTOCOLS, dvc_command, experiment_name, overrides_for, parse_strategies


def test_one_named_temp_experiment_per_strategy():
    overrides = overrides_for("paper", None, [])
    command = dvc_command(experiment_name("paper", 0.15), overrides, 0.15, queue=False)
    assert command[:6] == ["dvc", "exp", "run", "--name", "paper-ft0.15", "--temp"]
    assert "weights=imagenet" in command and "image_size=224" in command and "ft_fraction=0.15" in command
    assert "datasets=[busi,rodrigues,ddti,salivary]" in command
    assert experiment_name("paper", 1.0) == "paper-ft1" and experiment_name("paper", 0.0) == "paper-ft0"


def test_datasets_extra_overrides_and_queue():
    overrides = overrides_for("paper", ["phantom"], ["models=[ResNet50]", "image_size=96"])
    command = dvc_command("p1", overrides, 0.5, queue=True)
    assert "--queue" in command and "--temp" not in command
    assert "datasets=[phantom]" in command and "models=[ResNet50]" in command and "image_size=96" in command
    assert "image_size=224" not in command
    with pytest.raises(PipelineError, match="key=value"):
        overrides_for("paper", None, ["models"])


def test_strategies_are_checked():
    assert parse_strategies("0,0.15,0.5,1") == [0.0, 0.15, 0.5, 1.0]
    for bad in ("", "0,1.5", "a"):
        with pytest.raises(PipelineError, match="--strategies"):
            parse_strategies(bad)


def test_demo_protocol_matches_params_yaml():
    from tests.conftest import default_params

    params = default_params()
    for key, value in PROTOCOLS["demo"].items():
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, key


def test_dry_run_prints_commands_and_the_work_and_runs_nothing(capsys, project):
    from tests.conftest import default_params

    project.write_params(default_params())
    run(["protocol", "paper", "--strategies", "0,0.15", "-S", "models=[VGG16]",
         "-S", "weights=models/backbones/vgg16.h5", "--images", "ddti=400", "--tflops", "10", "--overhead-min", "0",
         "--dry-run"])
    out = capsys.readouterr().out
    # The weights file is not there yet: the dry run still estimates, and says a real run would stop.
    assert out.startswith("note: a real run would stop here:") and "models/backbones/vgg16.h5': no such file" in out
    commands = [line for line in out.splitlines() if line.startswith("dvc exp run")]
    assert commands[0].startswith("dvc exp run --name paper-ft0 --temp")
    assert commands[1].startswith("dvc exp run --name paper-ft0.15 --temp")
    rows = {(cells[1], cells[4]): cells for line in out.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.split("|")]]}
    assert rows[("busi", "0")][2] == "647" and rows[("ddti", "0.15")][2] == "400"    # published size; size given
    assert rows[("salivary", "0.15")][2] == "?" and rows[("salivary", "0.15")][7] == "?"   # unknown: said so
    # VGG16 at 224 px: 15.4 GMAC per image in all; at ft_fraction 0 only the head trains.
    assert rows[("busi", "0")][5] == "15.3" and float(rows[("busi", "0")][6]) < 0.001
    assert "h at 10 TFLOP/s" in out and not (project / "dvc.lock").exists() and not (project / "data").exists()


def test_a_bad_override_is_refused_before_any_experiment_starts(project, capsys):
    from tests.conftest import default_params

    project.write_params(default_params())
    with pytest.raises(PipelineError, match=r"finetune.epoch: unknown parameter; did you mean finetune.epochs\?"):
        run(["protocol", "demo", "--strategies", "0,0.15", "-S", "finetune.epoch=3"])
    assert "dvc exp run" not in capsys.readouterr().out


def device_unit_results(path, rows):
    path.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "backend": "jax", "rows": rows}))
    return path


def test_the_estimate_can_use_the_rates_a_device_run_measured(capsys, project, tmp_path):
    from tests.conftest import default_params

    project.write_params(default_params())
    # Two full-network rows (100 and 300 TMAC/s: median 200, i.e. 400 TFLOP/s), one tail row (50 TMAC/s), and
    # fixed costs of 60, 120 and 600 s (median 2 min); a float32 row and an 80 px row that the bf16 protocol at
    # 224 px must not read.
    def row(precision="mixed_bfloat16", image_size=224, *, prefix_macs, rate, fixed_s):
        return {"precision": precision, "image_size": image_size, "prefix_macs": prefix_macs,
                "steady_macs_per_s": rate, "unit_fixed_s": fixed_s}

    rows = [row(prefix_macs=0, rate=1e14, fixed_s=60.0), row(prefix_macs=0, rate=3e14, fixed_s=120.0),
            row(prefix_macs=5e9, rate=5e13, fixed_s=600.0),
            row("float32", prefix_macs=5e9, rate=1.0, fixed_s=1e9), row(image_size=80, prefix_macs=0, rate=1.0,
                                                                      fixed_s=1e9)]
    calibration = device_unit_results(tmp_path / "device_unit_jax.json", rows)
    run(["protocol", "paper", "--strategies", "0.15,1", "-S", "models=[VGG16]", "-S", "datasets=[busi]",
         "-S", "finetune.precision=mixed_bfloat16", "--calibration", str(calibration), "--dry-run"])
    out = capsys.readouterr().out
    assert "full network 400 TFLOP/s, frozen-prefix tail 100 TFLOP/s, plus 2 min per row" in out
    hours = {cells[4]: float(cells[8]) for line in out.splitlines() if line.startswith("| busi")
             for cells in [[c.strip() for c in line.split("|")]]}
    pmac = {cells[4]: float(cells[7]) for line in out.splitlines() if line.startswith("| busi")
            for cells in [[c.strip() for c in line.split("|")]]}
    assert hours["1"] == pytest.approx(2 * pmac["1"] * 1e15 / 400e12 / 3600 + 2 / 60, abs=0.006)
    assert hours["0.15"] == pytest.approx(2 * pmac["0.15"] * 1e15 / 100e12 / 3600 + 2 / 60, abs=0.006)


def test_a_calibration_without_the_precision_or_without_dry_run_is_refused(project, tmp_path):
    from tests.conftest import default_params

    project.write_params(default_params())
    measured = {"precision": "mixed_bfloat16", "image_size": 224, "prefix_macs": 0, "steady_macs_per_s": 1e14,
                "unit_fixed_s": 60.0}
    calibration = device_unit_results(tmp_path / "device_unit_jax.json", [measured])
    with pytest.raises(PipelineError, match=r"no row in finetune.precision float32 at image_size 224 "
                                            r"\(it has mixed_bfloat16 at 224 px\)"):
        run(["protocol", "paper", "--calibration", str(calibration), "--dry-run"])
    with pytest.raises(PipelineError, match="it changes only the estimate that --dry-run prints"):
        run(["protocol", "paper", "--calibration", str(calibration)])
    with pytest.raises(PipelineError, match="pass one or the other"):
        run(["protocol", "paper", "--calibration", str(calibration), "--tflops", "10", "--dry-run"])
    broken = device_unit_results(tmp_path / "nan.json", [measured | {"precision": "float32", "unit_fixed_s": None}])
    with pytest.raises(PipelineError, match="nan.json: not a results file"):
        run(["protocol", "paper", "--calibration", str(broken), "--dry-run"])
    negative = device_unit_results(tmp_path / "neg.json", [measured | {"precision": "float32", "unit_fixed_s": -6.0}])
    with pytest.raises(PipelineError, match=r"neg.json: fixed min per unit -0.1 is not a usable figure"):
        run(["protocol", "paper", "--calibration", str(negative), "--dry-run"])
    (tmp_path / "old.json").write_text(json.dumps({"rows": [{"precision": "float32", "cached": True}]}))
    with pytest.raises(PipelineError, match=r"old.json: not a results file of benchmarks.device_unit"):
        run(["protocol", "paper", "--calibration", str(tmp_path / "old.json"), "--dry-run"])


def test_a_weights_arm_runs_the_grid_again_for_its_networks_from_their_declared_files(capsys, project):
    from tests.conftest import default_params
    from tests.test_backbone_weights import declared_file

    project.write_params(default_params())
    file = declared_file(project.root, "r50.h5")
    run(["protocol", "paper", "--strategies", "0.15", "--images", "ddti=400", "salivary=100",
         "--weights-arm", f"radimagenet=ResNet50:{file}", "--dry-run"])
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("dvc exp run")]
    assert [command.split()[4] for command in commands] == ["paper-ft0.15", "paper-radimagenet-ft0.15"]
    assert "weights=imagenet" in commands[0] and "models=[ResNet50]" in commands[1]
    assert f"weights={{ResNet50: {file}}}" in commands[1]
    assert "r50.h5" not in out.split("dvc exp run")[0]          # the arm's file passed every check
    for bad in ("radimagenet", "RIN=ResNet50:x.h5", "rin=ResNet-50:x.h5"):
        with pytest.raises(PipelineError, match="--weights-arm"):
            run(["protocol", "paper", "--weights-arm", bad, "--dry-run"])


def test_a_key_below_a_value_that_is_no_section_is_refused_with_the_whole_value_to_give(project):
    from tests.conftest import default_params

    project.write_params(default_params())
    with pytest.raises(PipelineError, match=r"-S weights.ResNet50=imagenet: weights is 'none', not a section.*"
                                            r"-S 'weights=\{ResNet50: imagenet, ...\}'"):
        run(["protocol", "demo", "--strategies", "0.15", "-S", "+weights.ResNet50=imagenet", "--dry-run"])
