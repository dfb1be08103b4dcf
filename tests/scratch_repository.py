"""A scratch copy of the repository as a git + DVC project, for the end-to-end tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


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
