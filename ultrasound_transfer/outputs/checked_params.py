"""``check_params``'s output: ``data/params_checked.json``, the list of parameters checked.

It is the same for every valid ``params.yaml``, so it never makes a later
stage rerun; every other stage depends on it, so ``dvc repro`` checks the
parameters first.
"""

from __future__ import annotations

from pathlib import Path

from ultrasound_transfer.common import write_json
from ultrasound_transfer.outputs.stages import stage_name

PATH = Path("data/params_checked.json")
STAGE = stage_name("check_params")


def write_checked(summary: dict) -> None:
    """Record that ``params.yaml`` passed (``summary``: what was checked)."""
    write_json(PATH, summary)
