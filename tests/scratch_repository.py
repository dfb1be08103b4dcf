"""A scratch copy of the repository as a git + DVC project, for the end-to-end tests."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, merged

# The end-to-end tests' study: two networks (VGG16: one cached tensor; ResNet50: a cut inside a residual block).
TINY = {
    "datasets": ["phantom"],
    "models": ["VGG16", "ResNet50"],
    "image_size": 32,
    "download": {"phantom": {"count": 24, "images_per_patient": 2, "native_size": 48}},
    "cv": {"n_splits": 3},
    "finetune": {"epochs": 1, "batch_size": 8, "validation_fraction": 0.25},
    "svm": {"C_grid": [0.1, 1.0], "inner_folds": 2},
    "evaluation": {"bootstrap_resamples": 200},     # the intervals' machinery, at a tenth of the demo's cost
}


def run(args, cwd, check=True):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_repository(target: Path) -> None:
    """Copy what git tracks or would track, as a fresh clone plus uncommitted work would have."""
    listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], REPO).stdout
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        generated = relative.startswith(("metrics/", "dvc.lock")) and not relative.endswith(".gitkeep")
        if source.is_file() and not generated:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def commit_all(repo: Path, message: str) -> None:
    """``git add -A`` and commit, as a person would before ``dvc exp run``."""
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message], repo)


def tiny_params(**changes) -> str:
    """The repository's params.yaml with TINY merged in, and then ``changes`` (top-level keys)."""
    return yaml.safe_dump(merged(yaml.safe_load((REPO / "params.yaml").read_text()), {**TINY, **changes}),
                          sort_keys=False)


@dataclass(frozen=True)
class TrainedStudy:
    """A scratch repository after ``dvc repro`` of the TINY study (committed before the run, not after)."""

    root: Path
    repro: subprocess.CompletedProcess

    def copy_to(self, target: Path) -> Path:
        """A copy of the whole project, git history, DVC cache and outputs included, to change freely."""
        shutil.copytree(self.root, target, symlinks=True, dirs_exist_ok=True)
        return target


def train_tiny_study(root: Path) -> TrainedStudy:
    """Copy the repository to ``root``, commit it with TINY params, and run the whole pipeline there."""
    copy_repository(root)
    (root / "params.yaml").write_text(tiny_params())
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty"], root)
    commit_all(root, "tiny params")
    return TrainedStudy(root, run([sys.executable, "-m", "dvc", "repro"], root))
