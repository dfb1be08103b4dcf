import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from ultrasound_transfer.cli import run
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.study.sweep import (
    SweepRequest,
    assemble_reporting,
    build_grid,
    local_gpu_plan,
    plan_units,
    resolve_remote,
    uncommitted_code,
    visible_gpus,
)

BASE = (REPO / "params.yaml").read_text()


def grid(*argv):
    """``build_grid`` of ``-S`` items and an optional ``--protocol NAME`` first."""
    protocol = argv[1] if argv[:1] == ("--protocol",) else None
    items = [argv[i + 1] for i in range(len(argv)) if argv[i] == "-S"]
    return build_grid(SweepRequest(grid=items, protocol=protocol), BASE)


def test_grid_points_are_named_and_checked_before_any_work():
    points, varied = grid("-S", "ft_fraction=0,0.15", "-S", "seed=1")
    assert [p.name for p in points] == ["sweep-ft0", "sweep-ft0.15"] and varied == ["ft_fraction"]
    assert points[1].params["ft_fraction"] == 0.15 and points[1].params["seed"] == 1
    protocol, _ = grid("--protocol", "demo", "-S", "ft_fraction=0,1", "-S", "image_size=96")
    assert [p.name for p in protocol] == ["demo-ft0", "demo-ft1"]
    assert protocol[0].params["image_size"] == 96 and protocol[0].params["finetune"]["epochs"] == 15
    with pytest.raises(PipelineError, match="(?s)grid point sweep-ft2: .*ft_fraction = 2"):
        grid("-S", "ft_fraction=0,2")


def test_units_are_shared_by_points_that_differ_only_after_features():
    points, _ = grid("-S", "svm.C=0.1,1", "-S", "models=[VGG16,ResNet50]")
    units = plan_units(points)
    assert len(units) == 2                       # VGG16 and ResNet50, once for both values of C
    assert points[0].unit_keys == points[1].unit_keys
    strategies, _ = grid("-S", "ft_fraction=0,1", "-S", "models=[VGG16]")
    assert len(plan_units(strategies)) == 2
    assert sorted(unit.targets[0] for unit in plan_units(strategies).values()) == ["finetune@phantom-VGG16"] * 2


def test_workers_must_be_positive_and_items_key_value_before_any_work():
    with pytest.raises(PipelineError, match="--workers 0: give at least 1"):
        run(["sweep", "--workers", "0"])
    with pytest.raises(PipelineError, match="key=value"):
        run(["sweep", "-S", "ft_fraction"])


def dvc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True, capture_output=True, text=True)


def test_remote_by_name_url_or_path(tmp_path):
    dvc("init", "--no-scm", "-q", cwd=tmp_path)
    with pytest.raises(PipelineError, match="--remote PATH_OR_URL"):
        resolve_remote(None, tmp_path)
    dvc("remote", "add", "-d", "shared", "../shared-store", cwd=tmp_path)     # relative to where it was added
    assert resolve_remote(None, tmp_path) == str(tmp_path.parent / "shared-store")
    assert resolve_remote("shared", tmp_path) == str(tmp_path.parent / "shared-store")
    assert resolve_remote("s3://bucket/dvc", tmp_path) == "s3://bucket/dvc"
    made = resolve_remote(str(tmp_path / "new" / "store"), tmp_path)
    assert Path(made).is_dir()
    # A mistyped name is refused, naming the remotes there are; it never becomes a folder.
    with pytest.raises(PipelineError, match=r"--remote 'sharde' is neither a configured DVC remote \(configured: "
                                            r"shared\).*absolute path"):
        resolve_remote("sharde", tmp_path)
    assert not (tmp_path / "sharde").exists() and not (Path.cwd() / "sharde").exists()


def test_uncommitted_code_is_listed(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "finetune.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git("add", "-A")
    git("commit", "-q", "-m", "code")
    assert uncommitted_code(tmp_path) == []
    (tmp_path / "stages" / "finetune.py").write_text("x = 2\n")
    (tmp_path / "stages" / "new.py").write_text("")
    (tmp_path / "params.yaml").write_text("seed: 2\n")       # params travel with the units
    assert sorted(uncommitted_code(tmp_path)) == ["stages/finetune.py", "stages/new.py"]


def test_a_failed_assembly_loses_its_point_not_the_sweep(tmp_path, capsys):
    (point,), _ = grid("-S", "ft_fraction=0")
    retrained = ["finetune@earlier"]
    # Not a DVC repository: `dvc exp run --pull` fails, as a pull from a broken remote would.
    assert assemble_reporting(tmp_path, point, BASE, retrained) is False
    assert retrained == ["finetune@earlier"]
    shown = capsys.readouterr()
    assert f"{point.name}: assembly FAILED" in shown.out + shown.err


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert visible_gpus() == ["0", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_units_per_gpu_sets_the_workers_and_shares_each_gpu():
    count, plan = local_gpu_plan(None, 3, ["0", "1"])
    assert count == 6 and plan.shared and plan.gpus == ("0", "1")
    count, plan = local_gpu_plan(None, 1, ["0"])
    assert count == 1 and not plan.shared
    count, plan = local_gpu_plan(4, 1, ["0"])              # more workers than GPUs share them too
    assert count == 4 and plan.shared
    assert local_gpu_plan(None, 1, []) == (1, None)


def test_units_per_gpu_without_a_gpu_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.chdir(tmp_path)                              # no params.yaml: the refusal comes first
    with pytest.raises(PipelineError, match=r"--units-per-gpu 2: no GPU is visible here.*--workers"):
        run(["sweep", "-S", "ft_fraction=0,1", "--units-per-gpu", "2"])
    with pytest.raises(PipelineError, match=r"--units-per-gpu 0: give at least 1"):
        local_gpu_plan(None, 0, ["0"])
    assert not list(tmp_path.iterdir())
