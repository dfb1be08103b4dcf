"""Where the benchmarks put their figures: ``benchmarks/results/<name>.json`` and ``<name>.md``.

The JSON keeps every measured value (local, ignored by git); the markdown file
holds the tables the docs include (``docs/speed.md``, ``docs/reproducibility.md``
through ``pymdownx.snippets``), so no figure is copied into a page by hand.
Its first line says how, where and at which commit the figures were measured;
a table meant to be included on its own sits between snippet section markers.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"


def provenance(name: str) -> str:
    """One line: commit, date, machine and library versions, and the command that rewrites the file."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    # The results files themselves are left out: a benchmark rewrites its own after each part.
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ultrasound_transfer", "stages", "benchmarks",
                            ":(exclude)benchmarks/results"],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    versions = []
    for module in ("tensorflow", "torch", "jax", "keras"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    where = f"{os.cpu_count()}-core {platform.machine()} CPU, Python {platform.python_version()}, {', '.join(versions)}"
    return (f"Measured at commit {commit}{' with uncommitted changes' if dirty else ''}, "
            f"{datetime.date.today().isoformat()} ({where}) by `python -m benchmarks.{name} "
            f"{' '.join(sys.argv[1:])}`.".replace(" `.", "`.")
            + f" `python -m benchmarks.{name}` rewrites this file.")


def markdown_table(rows: list[list], headers: list[str]) -> str:
    """A GitHub table of already formatted cells (numbers are formatted by the caller, as they should read)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_results(name: str, data: object, tables: dict[str, str], note: str = "",
                  directory: Path = RESULTS_DIR) -> Path:
    """``<name>.json`` with ``data``; ``<name>.md`` with the provenance line, ``note`` and each table in its section."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    parts = [provenance(name)] + ([note] if note else [])
    for section, table in tables.items():
        parts.append(f"<!-- --8<-- [start:{section}] -->\n{table}\n<!-- --8<-- [end:{section}] -->")
    markdown = directory / f"{name}.md"
    markdown.write_text("\n\n".join(parts) + "\n")
    print(f"written to {directory / name}.json and .md", flush=True)
    return markdown
