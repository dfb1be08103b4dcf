"""The code each stage runs is declared in dvc.yaml, and imports only point down the layers."""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from ultrasound_transfer.source_files import holds_code, imported_names, imported_source_files

CODE_ROOTS = ("stages/", "ultrasound_transfer/")

# Each layer may import itself and the layers after it in this list, never one before.
LAYERS = [
    ("ultrasound_transfer.cli", "ultrasound_transfer.__main__"),
    ("stages", "ultrasound_transfer.study", "ultrasound_transfer.deployment"),
    ("ultrasound_transfer.outputs",),
    ("ultrasound_transfer.networks", "ultrasound_transfer.evaluation"),
    ("ultrasound_transfer.parameters",),
    ("ultrasound_transfer.data",),
    ("ultrasound_transfer.settings", "ultrasound_transfer.choices", "ultrasound_transfer.backbone_weights"),
    ("ultrasound_transfer.common", "ultrasound_transfer.paths", "ultrasound_transfer.source_files"),
]
# Public functions take at most this many positional parameters; the rest are keyword-only.
MAX_POSITIONAL = 5


def stage_specs() -> dict[str, dict]:
    """Stage name -> its body in dvc.yaml (the ``do`` part of a ``foreach`` stage)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def stage_code_deps() -> dict[str, set[str]]:
    """Stage name -> the source files dvc.yaml lists among its deps."""
    return {name: {d for d in spec["deps"] if d.startswith(CODE_ROOTS)} for name, spec in stage_specs().items()}


@pytest.mark.parametrize("stage", sorted(stage_code_deps()))
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(stage):
    declared = stage_code_deps()[stage]
    derived = {str(path) for path in imported_source_files(f"stages.{stage}")}
    assert derived - declared == set(), f"dvc.yaml: add to the deps of {stage}"
    assert declared - derived == set(), f"dvc.yaml: {stage} does not run these; remove them from its deps"


def test_stages_holds_exactly_the_modules_dvc_runs():
    for name, spec in stage_specs().items():
        assert spec["cmd"].startswith(f"python -m stages.{name}")
    modules = {path.stem for path in (REPO / "stages").glob("*.py")} - {"__init__"}
    assert modules == set(stage_specs()), "stages/ is for DVC stages; a command goes in ultrasound_transfer/cli.py"


def test_derivation_follows_imports_transitively_and_skips_docstring_only_packages(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "stages" / "a.py").write_text("import os\nfrom ultrasound_transfer.x import f\n")
    package = tmp_path / "ultrasound_transfer"
    package.mkdir()
    (package / "__init__.py").write_text('"""Doc."""\nimport os\n')
    (package / "x.py").write_text("def f():\n    from . import y\n")
    (package / "y.py").write_text("")
    (package / "unused.py").write_text("")
    files = {str(p) for p in imported_source_files("stages.a", root=tmp_path)}
    assert files == {"stages/a.py", "ultrasound_transfer/__init__.py", "ultrasound_transfer/x.py",
                     "ultrasound_transfer/y.py"}
    assert not holds_code(tmp_path / "stages" / "__init__.py")


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no layer; add it to LAYERS")


def project_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(REPO.glob("stages/*.py")) + sorted(REPO.glob("ultrasound_transfer/**/*.py")):
        if path.name == "__main__.py":
            modules["ultrasound_transfer.__main__"] = path
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_imports_only_point_down_the_layers():
    upward = []
    for module, path in project_modules().items():
        if module in ("ultrasound_transfer", "stages"):
            continue
        for name in imported_names(path, module):
            if name.split(".")[0] in ("stages", "ultrasound_transfer") and name not in ("ultrasound_transfer",):
                if name in project_modules() and layer_of(name) < layer_of(module):
                    upward.append(f"{module} imports {name}")
    assert upward == []


def test_wings_of_one_layer_do_not_import_each_other():
    apart = (("ultrasound_transfer.evaluation", "ultrasound_transfer.networks"),
             ("stages", "ultrasound_transfer.study"), ("stages", "ultrasound_transfer.deployment"),
             ("ultrasound_transfer.study", "ultrasound_transfer.deployment"))
    for module, path in project_modules().items():
        for one, other in apart + tuple((b, a) for a, b in apart):
            if module == one or module.startswith(one + "."):
                assert not any(n == other or n.startswith(other + ".") for n in imported_names(path, module)), module


def test_public_functions_take_few_positional_parameters():
    crowded = []
    for module, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                positional = [a.arg for a in node.args.posonlyargs + node.args.args if a.arg not in ("self", "cls")]
                if len(positional) > MAX_POSITIONAL:
                    crowded.append(f"{module}.{node.name}({', '.join(positional)})")
    assert crowded == [], "make the later parameters keyword-only (after a bare *)"


def test_package_init_files_hold_no_definitions():
    # Docstring-only __init__ files are left out of the stages' deps; the rest must stay trivial too.
    for path in list(REPO.glob("ultrasound_transfer/**/__init__.py")) + [REPO / "stages/__init__.py"]:
        tree = ast.parse(path.read_text())
        assert not any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.walk(tree)), path
