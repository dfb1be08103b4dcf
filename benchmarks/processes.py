"""One child process timed on its own: its wall time and the resources that process alone used.

``os.wait4`` on the child's pid gives that child's own ``rusage`` (user and
system CPU time, minor page faults, peak resident memory); ``RUSAGE_CHILDREN``
would give the sums, and the largest peak, of every child this benchmark ever
waited for.  The child's standard error goes to a temporary file, not a pipe:
a pipe nobody reads while the benchmark waits would stop a child that writes
more than the pipe holds (64 KiB; TensorFlow's start-up alone writes a few
KiB), and the wait would never end.

A child's heap setting is the child's own (:func:`child_environment`): a
``MALLOC_TOP_PAD_`` in the caller's environment would otherwise reach every
child and decide what a benchmark compares.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ultrasound_transfer.networks.heap import ENVIRONMENT_SWITCH

# A child given this runs with glibc's default heap: its own default top pad, 128 KiB (mallopt(3), M_TOP_PAD),
# which the stages then leave as set (ultrasound_transfer.networks.heap).
GLIBC_DEFAULT_HEAP = {ENVIRONMENT_SWITCH: str(128 * 1024)}
# The end of the child's standard error that a failure reports.
ERROR_TAIL_CHARS = 3000


@dataclass(frozen=True)
class ProcessUsage:
    """What one child process took: wall seconds, CPU seconds in user space and in the kernel, minor page faults
    and peak resident memory in MB (``ru_maxrss`` is in KiB on Linux)."""

    seconds: float
    user_s: float
    system_s: float
    page_faults: int
    peak_mb: float


def child_environment(setting: dict[str, str]) -> dict[str, str]:
    """This process's environment for a child, without the caller's ``MALLOC_TOP_PAD_``, then ``setting``'s
    variables (:data:`GLIBC_DEFAULT_HEAP` among them, or not: the stage's own setting)."""
    return {key: value for key, value in os.environ.items() if key != ENVIRONMENT_SWITCH} | setting


def timed_process(command: list[str], *, cwd: Path, env: dict[str, str], what: str) -> ProcessUsage:
    """Run ``command`` in ``cwd`` with exactly ``env``, its output discarded; its :class:`ProcessUsage`.  A failed
    run stops the benchmark with ``what`` failed, the exit status and the end of its standard error."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-ERROR_TAIL_CHARS:]
            raise SystemExit(f"{what} failed (exit {process.returncode}) in {cwd}:\n{tail}")
    return ProcessUsage(seconds=seconds, user_s=usage.ru_utime, system_s=usage.ru_stime,
                        page_faults=usage.ru_minflt, peak_mb=usage.ru_maxrss / 1024)
