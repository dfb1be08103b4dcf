"""MkDocs hook: the docs' generated tables, so that no page copies a fact by hand.

Two markers in a page's markdown are replaced when the site is built:

* ``<!-- parameters -->``: the parameter reference, generated from the schema
  and ``params.yaml``'s comments by
  :func:`ultrasound_transfer.parameters.reference_markdown`;
* ``<!-- stage-outputs -->``: one row per stage of ``dvc.yaml``: what it runs
  per, the first line of its module's docstring, and every output it declares
  (``outs``, ``metrics``, ``plots``).

Both are read from the repository root, the folder of ``mkdocs.yml``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

PARAMETERS = "<!-- parameters -->"
STAGE_OUTPUTS = "<!-- stage-outputs -->"
# dvc.yaml's loop variables, as the docs write them.
PLACEHOLDERS = {"${item.dataset}": "<dataset>", "${item.model}": "<model>", "${item}": "<dataset>"}


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = Path(config["config_file_path"]).parent
    if PARAMETERS in markdown:
        # No fallback: a reference that cannot be generated must fail the build, not go stale.
        from ultrasound_transfer.parameters import reference_markdown

        markdown = markdown.replace(PARAMETERS, reference_markdown(root / "params.yaml"))
    if STAGE_OUTPUTS in markdown:
        markdown = markdown.replace(STAGE_OUTPUTS, stage_table(root))
    return markdown


def readable(path: str) -> str:
    for variable, name in PLACEHOLDERS.items():
        path = path.replace(variable, name)
    return path


def runs_per(spec: dict) -> str:
    """``—`` for one run, the loop variable for ``foreach`` (``${datasets}`` -> dataset), matrix keys joined."""
    if "matrix" in spec:
        return " × ".join(spec["matrix"])
    if "foreach" in spec:
        return str(spec["foreach"]).strip("${}").removesuffix("s")
    return "—"


def summary(root: Path, cmd: str) -> str:
    """First docstring line of the module that ``cmd`` runs (``python -m stages.x``), its "Stage ``x``:" dropped."""
    module = re.search(r"-m\s+(\S+)", cmd).group(1)
    source = (root / (module.replace(".", "/") + ".py")).read_text()
    line = (ast.get_docstring(ast.parse(source)) or "").splitlines()[0]
    line = re.sub(r"^Stage ``[^`]+``:\s*", "", line).replace("``", "`")
    return line[:1].upper() + line[1:]


def declared_outputs(spec: dict) -> list[str]:
    """Every path in ``outs``, ``metrics`` and ``plots``, in that order (a dict entry's key is its path)."""
    entries = [entry for kind in ("outs", "metrics", "plots") for entry in spec.get(kind, [])]
    return [readable(next(iter(entry)) if isinstance(entry, dict) else entry) for entry in entries]


def stage_table(root: Path) -> str:
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    rows = ["| stage | per | does | writes |", "|---|---|---|---|"]
    for name, spec in stages.items():
        body = spec.get("do", spec)   # a foreach stage keeps its body under do
        outputs = "<br>".join(f"`{path}`" for path in declared_outputs(body))
        cell = summary(root, body["cmd"]).replace("|", "\\|")
        rows.append(f"| `{name}` | {runs_per(spec)} | {cell} | {outputs} |")
    return "\n".join(rows)
