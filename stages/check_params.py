"""Stage ``check_params``: every parameter checked, before any other stage does work.

Usage: ``python -m stages.check_params``.  Reads all of ``params.yaml``.

Every other stage depends on this one's output, so ``dvc repro`` and ``dvc exp
run`` run it first whenever a parameter changed, and a mistyped or
out-of-range parameter stops the run in about a second, with one message
listing every problem (:mod:`ultrasound_transfer.parameters`), before any data
is fetched or any network built.  Output ``data/params_checked.json`` is the
same for every valid ``params.yaml`` (the list of parameters checked), so it
never makes a later stage rerun.
"""

from __future__ import annotations

from ultrasound_transfer.common import PipelineError, Stopwatch, log, run_stage
from ultrasound_transfer.outputs.checked_params import write_checked
from ultrasound_transfer.parameters import checked_summary, load_settings


def main(argv: list[str]) -> None:
    if argv:
        raise PipelineError(f"usage: python -m stages.check_params (got arguments {argv}).")
    clock = Stopwatch()
    load_settings(verify_weights=True)       # the weights files' checksums once per run, here
    summary = checked_summary()
    write_checked(summary)
    log("check_params", f"{len(summary['checked'])} parameters valid ({clock})")


if __name__ == "__main__":
    run_stage(main)
