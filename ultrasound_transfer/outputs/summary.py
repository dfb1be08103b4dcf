"""``report``'s output: ``metrics/summary.md`` and ``.json``, and ``metrics/errors/<dataset>/<model>.png``."""

from __future__ import annotations

from pathlib import Path

from ultrasound_transfer.common import write_atomic, write_json
from ultrasound_transfer.outputs.stages import stage_name

SUMMARY_DIR = Path("metrics")
MARKDOWN, JSON = SUMMARY_DIR / "summary.md", SUMMARY_DIR / "summary.json"
ERRORS_DIR = Path("metrics/errors")
STAGE = stage_name("report")


def errors_sheet_path(dataset: str, model: str, root: Path = ERRORS_DIR) -> Path:
    """The contact sheet of one network's most confident errors (below ``root``, the folder being written)."""
    return root / dataset / f"{model}.png"


def write_summary(*, markdown: str, figures: dict) -> None:
    write_json(JSON, figures)
    write_atomic(MARKDOWN, lambda tmp: tmp.write_text(markdown))
