"""Which of the project's source files a module runs: its imports, followed transitively.

``dvc.yaml`` must list every such file as a dependency of the stage that runs
the module, or DVC would call a stage up to date after a change to code it
runs; ``tests/test_source_files.py`` compares the two.  ``finetune`` also
fingerprints these files, so that a resumed run never mixes folds trained by
different code.

The imports are read from the source (every ``import`` statement, also those
inside functions), not by importing, so no framework has to load.  A package's
``__init__.py`` counts when it holds code; one that holds only a docstring
cannot change what a stage computes and is left out.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("stages", "ultrasound_transfer")


def module_path(name: str, root: Path = REPO_ROOT) -> Path | None:
    """The file of project module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), or None."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def holds_code(path: Path) -> bool:
    """Whether a file has any statement besides its docstring."""
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


def imported_names(path: Path, module: str) -> set[str]:
    """Dotted names of every module ``path`` imports, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b``: ``b`` may be a module.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def parent_packages(name: str) -> list[str]:
    """``a.b.c`` -> ``['a', 'a.b']``: the packages Python imports before the module."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_source_files(module: str, root: Path = REPO_ROOT,
                          packages: tuple[str, ...] = PROJECT_PACKAGES) -> list[Path]:
    """Every source file of ``packages`` that running ``module`` imports, itself included, sorted, relative to
    ``root``."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen or name.split(".")[0] not in packages:
            continue
        path = module_path(name, root)
        if path is None:
            continue
        seen.add(name)
        pending.extend(parent_packages(name))
        pending.extend(imported_names(path, name))
    files = {module_path(name, root) for name in seen}
    return sorted(p.relative_to(root) for p in files if p.name != "__init__.py" or holds_code(p))


def without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of its module, classes and functions removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(files: list[Path], root: Path = REPO_ROOT) -> str:
    """Twelve hex digits of SHA-256 over what ``files`` (relative to ``root``) do: each one's syntax tree without
    comments, docstrings or layout, so that a benchmark's figures stay valid through an edit of its prose and
    not through an edit of its code."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"\n{path}\n".encode())
        digest.update(ast.dump(without_docstrings(ast.parse((root / path).read_text()))).encode())
    return digest.hexdigest()[:12]
