"""Where the benchmarks put their figures: ``benchmarks/results/<name>.json`` and ``<name>.md``.

The JSON keeps every measured value (local, ignored by git); the markdown file
holds the tables the docs include (``docs/speed.md``, ``docs/reproducibility.md``
through ``pymdownx.snippets``), so no figure is copied into a page by hand.
Its first line says how, where and at which commit the figures were measured;
a table meant to be included on its own sits between snippet section markers.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from ultrasound_transfer.source_files import code_fingerprint, imported_source_files

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
CODE_PACKAGES = ("benchmarks", "stages", "ultrasound_transfer")
# Writes the figures, times nothing: an edit here leaves every results file valid.
NOT_TIMED = {Path("benchmarks/results.py")}
TIMED_CODE_PATTERN = re.compile(r"timed code `([0-9a-f]{12})`")
BENCHMARK_PATTERN = re.compile(r"by `python -m benchmarks\.(\w+)")


def timed_files(name: str) -> list[Path]:
    """The source files whose code ``benchmarks.<name>`` times: what it imports, and what it runs in other
    processes (the modules its ``RUNS`` names, such as ``stages.finetune``)."""
    files = set(imported_source_files(f"benchmarks.{name}", packages=CODE_PACKAGES))
    for module in getattr(importlib.import_module(f"benchmarks.{name}"), "RUNS", ()):
        files |= set(imported_source_files(module, packages=CODE_PACKAGES))
    return sorted(files - NOT_TIMED)


def timed_code(name: str) -> str:
    """The fingerprint of the code ``benchmarks.<name>`` times (:func:`timed_files`), comments and docstrings
    left out (:func:`ultrasound_transfer.source_files.code_fingerprint`)."""
    return code_fingerprint(timed_files(name), root=REPO)


def recorded_timed_code(markdown: Path) -> tuple[str, str] | None:
    """The benchmark that wrote a results file and the timed-code fingerprint it measured (its first line), or
    None where the line says neither."""
    first = markdown.read_text().split("\n", 1)[0]
    benchmark, found = BENCHMARK_PATTERN.search(first), TIMED_CODE_PATTERN.search(first)
    return (benchmark.group(1), found.group(1)) if benchmark and found else None


def git(*args: str) -> str:
    """A git command's output in the repository; empty where there is no git or no repository (a copy of the
    working tree on a device machine)."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return ""


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name and the matrix instructions that set its float32 and bf16 rates (AVX-512, its bf16
    extension, AMX), from ``cpuinfo``: machines of one kind differ in them (a bf16 product is several times
    faster with AMX).  Empty where the file is absent (macOS, Windows)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    extensions = [label if flag in present else f"no {label}"
                  for flag, label in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"), ("amx_bf16", "AMX"))]
    return f"{model.group(1).strip() if model else 'unnamed'}; {', '.join(extensions)}"


def provenance(name: str) -> str:
    """One line: commit, date, machine and library versions, the command that rewrites the file, and the
    fingerprint of the code it timed (``name``: the benchmark's module in ``benchmarks``)."""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # The code it times and the parameters the study runs with: other uncommitted work (another benchmark, the
    # docs) does not touch the figures.
    dirty = git("status", "--porcelain", "--", *map(str, timed_files(name)), "params.yaml", "dvc.yaml")
    versions = []
    for module in ("tensorflow", "torch", "jax", "keras"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            pass
    cpu = cpu_description()
    where = (f"{os.cpu_count()}-core {platform.machine()} CPU{f' ({cpu})' if cpu else ''}, "
             f"Python {platform.python_version()}, {', '.join(versions)}")
    return (f"Measured at commit {commit}{' with uncommitted changes to the code it times' if dirty else ''}, "
            f"{datetime.date.today().isoformat()} ({where}) by `python -m benchmarks.{name} "
            f"{' '.join(sys.argv[1:])}`.".replace(" `.", "`.")
            + f" `python -m benchmarks.{name}` rewrites this file; timed code `{timed_code(name)}` (a test fails "
            "once that code changes, until the file is rewritten).")


def markdown_table(rows: list[list], headers: list[str]) -> str:
    """A GitHub table of already formatted cells (numbers are formatted by the caller, as they should read)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_results(name: str, data: object, tables: dict[str, str], note: str = "",
                  directory: Path = RESULTS_DIR, benchmark: str | None = None) -> Path:
    """``<name>.json`` with ``data``; ``<name>.md`` with the provenance line, ``note`` and each table in its section.

    ``benchmark``: the module in ``benchmarks`` that measured them, where the file is not named after it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    parts = [provenance(benchmark or name)] + ([note] if note else [])
    for section, table in tables.items():
        parts.append(f"<!-- --8<-- [start:{section}] -->\n{table}\n<!-- --8<-- [end:{section}] -->")
    markdown = directory / f"{name}.md"
    markdown.write_text("\n\n".join(parts) + "\n")
    print(f"written to {directory / name}.json and .md", flush=True)
    return markdown
