"""The grouping of tests/conftest.py: every module sharing a trained study is kept in one process under -n."""

from __future__ import annotations

import re

from tests.conftest import REPO, SHARED_STUDY_MODULES


def sharing_modules() -> set[str]:
    """Test modules that build a study shared across tests: a module or session fixture, or the tiny study."""
    shared = re.compile(r'scope="(module|session)"|\btrained_tiny_study\b')
    return {path.relative_to(REPO).as_posix() for path in (REPO / "tests").rglob("test_*.py")
            if shared.search(path.read_text())}


def test_every_module_sharing_a_study_is_grouped_and_every_grouped_module_exists():
    assert sharing_modules() == set(SHARED_STUDY_MODULES)


def test_the_scheduler_puts_a_group_in_one_scope_and_other_tests_each_in_their_own():
    from xdist.scheduler import LoadScopeScheduling

    from tests.conftest import pytest_xdist_make_scheduler

    class Config:                   # the options pytest -n 2 gives
        def getvalue(self, name):
            return {"dist": "load", "tx": ["2*popen"]}[name]

    scheduler = pytest_xdist_make_scheduler(Config(), None)
    assert isinstance(scheduler, LoadScopeScheduling)
    scope = scheduler._split_scope
    assert scope("tests/test_pipeline.py::test_a") == scope("tests/deployment/test_commands.py::test_b[x]")
    assert scope("tests/stages/test_external.py::test_c") != scope("tests/test_pipeline.py::test_a")
    assert scope("tests/stages/test_folds.py::test_d") != scope("tests/stages/test_folds.py::test_e")
