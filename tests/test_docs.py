"""The README and the docs name only what exists, and the README stays a front door."""

import fnmatch
import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 250


def tracked_paths() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split()
    folders = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}
    return sorted(set(listed) | folders)


def dvc_outputs() -> list[str]:
    """Every output path dvc.yaml declares, its loop variables as ``*``."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    paths = []
    for spec in stages.values():
        body = spec.get("do", spec)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                paths.append(re.sub(r"\$\{[^}]+\}", "*", path))
    return paths


def named_paths(text: str, top: set[str]) -> set[str]:
    """Repository paths a page names in backticks: words whose first part is a top-level entry of the repository."""
    names = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        for word in span.split():
            word = word.strip(",;:()'\"").rstrip(".")
            if "://" in word or "{" in word or "=" in word or not word:
                continue
            if word.split("/")[0] in top and ("/" in word or "." in word):
                names.add(word)
    return names


def ignored_by_git(path: str) -> bool:
    """What a command writes locally and git ignores on purpose (``metrics/compare/``, ``.unfinished/``, ...)."""
    example = re.sub(r"<[^>]+>|\*", "x", path)
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", example], cwd=REPO).returncode == 0


def exists(path: str, files: list[str], outputs: list[str]) -> bool:
    """Tracked (placeholders like ``<dataset>`` match anything), a pipeline output (below or above one), or ignored."""
    pattern = re.sub(r"<[^>]+>", "*", path).rstrip("/")
    if any(fnmatch.fnmatch(f, pattern) for f in files):
        return True
    return any(fnmatch.fnmatch(pattern, out) or fnmatch.fnmatch(pattern, out + "/*")
               or fnmatch.fnmatch(out, pattern + "/*") or pattern.replace("*", "x") == out.replace("*", "x")
               for out in outputs) or ignored_by_git(path)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_page_names_exists(page):
    files, outputs = tracked_paths(), dvc_outputs()
    top = {path.split("/")[0] for path in files} | {out.split("/")[0] for out in outputs}
    missing = sorted(p for p in named_paths(page.read_text(), top) if not exists(p, files, outputs))
    assert missing == [], f"{page.name} names paths that are neither in the repository nor pipeline outputs"


def test_the_path_check_can_fail():
    files, outputs = ["stages/folds.py", "docs/index.md"], ["data/folds/*.json", "models/*/*/weights"]
    assert exists("stages/folds.py", files, outputs) and exists("data/folds/<dataset>.json", files, outputs)
    assert exists("models/<dataset>/<model>/weights/fold<k>.weights.npz", files, outputs)
    assert not exists("stages/protocol.py", files, outputs) and not exists("data/fold/x.json", files, outputs)
    assert exists("metrics/compare/<dataset>.md", files, outputs)        # written by a command, ignored by git
    assert named_paths("run `python -m stages.folds` or see `stages/folds.py`, `dvc.yaml`", {"stages", "dvc.yaml"}) \
        == {"stages/folds.py", "dvc.yaml"}


def test_readme_is_a_front_door_and_its_commands_are_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    ci = (REPO / ".ci/run").read_text()
    assert "python -m pytest -q -n 2\n" in readme and re.search(r"python -m pytest -q -n 2( \|\||$)", ci, re.M)
    assert 'python -m pytest -q -m "not slow"' in readme
    assert "pip install -e . && dvc repro" in readme


def test_readme_links_point_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)#]+)", (REPO / "README.md").read_text())
    assert links and all((REPO / link).is_file() for link in links)


def test_every_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(page.name in nav for page in PAGES if page.parent.name == "docs")


def readme_layout() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("[start:layout]")[1].split("[end:layout]")[0]


def test_the_layout_map_names_every_module_and_nothing_that_is_gone():
    """One map of the repository, the README's (docs/development.md includes it): every package's modules, the
    package's own modules and the benchmarks are named there; every folder it names exists."""
    layout = readme_layout()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?:\.py)?", layout))
    package = REPO / "ultrasound_transfer"
    missing = []
    for wing in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        missing += [f"{wing.name}/{m.stem}" for m in sorted(wing.glob("*.py")) if m.stem != "__init__"
                    and m.stem not in words] + ([f"{wing.name}/"] if f"{wing.name}/" not in layout else [])
    missing += [m.name for m in sorted(package.glob("*.py")) if not m.name.startswith("__") and m.name not in words]
    missing += [m.stem for m in sorted((REPO / "benchmarks").glob("*.py")) if m.stem not in ("__init__", "results")
                and m.stem not in words]
    assert missing == [], "README.md's layout does not name these"
    named_folders = re.findall(r"^\s*([a-z_]+)/\s", layout, flags=re.MULTILINE)
    assert all((package / f).is_dir() or (REPO / f).is_dir() for f in named_folders), named_folders
    assert '--8<-- "README.md:layout"' in (REPO / "docs/development.md").read_text()
