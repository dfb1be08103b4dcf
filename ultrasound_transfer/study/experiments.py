"""DVC experiments of a parameter grid: ``-S`` values, grid points, names, what exists.

Shared by the commands that start experiments (``ultrasound-transfer protocol``
runs a grid with ``dvc exp run``; ``ultrasound-transfer sweep`` spreads one over
Dask workers),
so that the same grid gets the same experiment names and parameter values
either way.  A value is always YAML text, parsed as DVC parses ``-S
key=value``: ``0`` stays the integer 0, so the parameters, and with them
DVC's run-cache keys, are the same whichever command computed a result.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ultrasound_transfer.common import PipelineError, load_params, parse_yaml

# DVC of this interpreter: the commands work without the virtual environment on PATH.
DVC = [sys.executable, "-m", "dvc"]


def format_value(value: object) -> str:
    """A value as DVC's ``-S key=value`` parses it (YAML)."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {item}" for key, item in value.items()) + "}"
    return str(value)


def split_override(item: str, option: str = "-S") -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``, or an error that shows the form."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise PipelineError(f"{option} {item!r}: write it as key=value, e.g. {option} models=[ResNet50].")
    return key.strip(), value.strip()


def split_values(text: str) -> list[str]:
    """``"0,0.15,[a,b]"`` -> ``["0", "0.15", "[a,b]"]``: commas inside brackets or braces belong to the value."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``-S key=v1,v2`` items (as ``dvc exp run --queue`` takes them) -> key -> its values, in order."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, text = split_override(item)
        values = split_values(text)
        if any(not value for value in values):
            raise PipelineError(f"-S {item!r}: an empty value; separate values by single commas, e.g. "
                                "-S ft_fraction=0,0.15,0.5,1.")
        grid[key] = values
    return grid


def grid_points(fixed: dict[str, str], grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values (first key varying slowest), each over ``fixed``."""
    keys = list(grid)
    return [{**fixed, **dict(zip(keys, values))} for values in itertools.product(*(grid[key] for key in keys))]


def experiment_name(prefix: str, point: dict[str, str], varied: list[str]) -> str:
    """``paper-ft0.15``, ``sweep-ft0.5-seed7``: the prefix, then each varied key and its value.

    ``ft_fraction`` is written ``ft`` so that a protocol's grid gets the names
    ``ultrasound-transfer protocol`` gives it.  Characters git refuses in a name become ``_``.
    """
    parts = [prefix]
    for key in varied:
        label = "ft" if key == "ft_fraction" else key
        value = point[key]
        if key == "ft_fraction":
            value = f"{float(value):g}"
        parts.append(f"{label}{value}")
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", "-".join(parts)).strip("_")


def resolved_params(overrides: dict[str, str], base: str | None = None) -> dict:
    """``params.yaml`` (or the YAML text ``base``) with the overrides applied as ``dvc exp run -S`` applies
    them (DVC's own writer, then read back as DVC reads it), so a dry run sees what the real run will.

    DVC changes only keys the file has; it adds one only when written
    ``+key=value``.  So a ``+key`` is added here too; a key the file lacks,
    written without ``+``, is refused as DVC would refuse it when it is a
    known parameter, and otherwise added so that the parameter check names it
    with the nearest known key.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from ultrasound_transfer.parameters import schema_keys

    text = Path("params.yaml").read_text() if base is None else base
    present, added = {}, {}
    known = parse_yaml(text, "params.yaml") or {}
    for key, value in overrides.items():
        node = known
        for part in key.lstrip("+").split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING and not key.startswith("+"):
            present[key] = value
        elif key.startswith("+") or key not in schema_keys():
            added[key.lstrip("+")] = value
        else:
            raise PipelineError(f"-S {key}={value}: params.yaml has no {key} yet, and DVC adds a key only when "
                                f"written -S +{key}={value}.")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "params.yaml"
        path.write_text(text)
        if present:
            try:
                apply_overrides(str(path), [f"{key}={value}" for key, value in present.items()])
            except InvalidArgumentError as error:
                cause = error.__cause__ or error
                listed = " ".join(f"{key}={value}" for key, value in present.items())
                raise PipelineError(f"-S {listed}: DVC cannot read one of these values ({cause}); quote values "
                                    "with spaces or &, ? and brackets, e.g. -S 'key=\"a&b\"', and close every "
                                    "list bracket.") from None
        params = load_params(path)
    for key, value in added.items():
        node = params
        *parents, last = key.split(".")
        for depth, part in enumerate(parents, start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                # DVC would replace the whole value (weights: imagenet by {ResNet50: ...}), not add a key to it.
                parent = ".".join(parents[:depth])
                raise PipelineError(f"-S {key}={value}: {parent} is {node!r}, not a section, so it has no key "
                                    f"{last}; give the whole value, e.g. -S '{parent}={{{last}: {value}, ...}}' "
                                    "(for weights: one entry per network studied).")
        node[last] = parse_yaml(value, f"-S {key}")
    return params


_MISSING = object()


def existing_experiments(repo: Path | str = ".") -> set[str]:
    """Names of the experiments of the repository's current commit, finished or waiting in the queue."""
    names: set[str] = set()
    listed = subprocess.run([*DVC, "exp", "list", "--name-only"], capture_output=True, text=True, cwd=repo)
    names.update(line.strip() for line in listed.stdout.splitlines() if line.strip())
    queued = subprocess.run([*DVC, "queue", "status"], capture_output=True, text=True, cwd=repo)
    for line in queued.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.search(r"\b(Queued|Running)\b", line):
            names.add(parts[1])
    return names
