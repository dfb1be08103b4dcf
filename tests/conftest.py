"""Shared test fixtures: a scratch project folder to run stages in; how ``pytest -n`` shares out the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Modules whose tests share a trained study (a session or module fixture, about a minute to build): under
# ``pytest -n`` each group runs in one process, so the study is built once rather than once per process.
SHARED_STUDY_MODULES = {
    "tests/test_pipeline.py": "tiny-study",                 # trained_tiny_study
    "tests/deployment/test_commands.py": "tiny-study",      # trained_tiny_study
    "tests/stages/test_external.py": "external-study",      # its module fixture ``trained``
}


def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n`` (default ``--dist load``), keep each group of ``SHARED_STUDY_MODULES`` on one process
    and share out every other test one by one.

    pytest-xdist's own ``--dist loadgroup`` would do this from ``xdist_group`` marks, but with pytest 9.2 it
    silently groups nothing (pytest-xdist issue #1386: it renames node ids, which pytest 9.2 no longer reads).
    Another ``--dist`` given on the command line is left to xdist.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedStudyScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_STUDY_MODULES.get(nodeid.split("::")[0], nodeid)

    return SharedStudyScheduling(config, log)


class Project:
    """A scratch working directory; ``project / "data"`` is a path inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __truediv__(self, relative: str) -> Path:
        return self.root / relative

    def write_params(self, params: dict) -> Path:
        """params.yaml: the repository's, with ``params`` merged in (sections key by key)."""
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(merged(default_params(), params)))
        return path


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty folder made the working directory, as DVC runs the stages.

    Stages read ``params.yaml`` and write under ``data/``, ``models/`` and
    ``metrics/`` relative to the working directory.
    """
    monkeypatch.chdir(tmp_path)
    return Project(tmp_path)


def merged(base: dict, update: dict) -> dict:
    """``base`` with ``update`` written over it, nested sections merged key by key."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged(base[key], value)
        else:
            base[key] = value
    return base


def default_params() -> dict:
    """The repository's params.yaml, as a dict to modify."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(scope="session")
def trained_tiny_study(tmp_path_factory):
    """The TINY study trained once per session by a real ``dvc repro``; tests take copies (``copy_to``)."""
    from tests.scratch_repository import train_tiny_study

    return train_tiny_study(tmp_path_factory.mktemp("tiny-study"))
