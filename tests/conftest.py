"""Shared test fixtures: a scratch project folder to run stages in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


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
