"""One unit of a sweep, as a Dask worker runs it: real DVC work in the worker's own clone.

A *unit* is one dataset x network of one grid point: its ``finetune`` stage
(the fold networks and the SVM's features), the expensive one, which DVC's run-cache can restore
anywhere.  A worker runs it as a user would by hand, in a clone of the
repository at the sweep's commit:

1. ``git checkout`` of the commit, the grid point's ``params.yaml`` and the
   ``dvc.lock`` of the shared data stages (written by the machine that ran
   them once), the shared DVC remote as the clone's default;
2. ``dvc repro --pull finetune@<dataset>-<network>``: the data stages'
   outputs come from the remote, ``folds`` reruns (seconds; its output is
   not cached), and a unit some machine already ran is restored from the
   run-cache instead of trained again;
3. ``dvc push --run-cache``: the outputs and the run-cache entries go to the
   remote, where the machine that assembles the experiments finds them.

Nothing here schedules: Dask places units on workers and retries failed
ones; DVC decides what to run.  A failed unit raises :class:`UnitFailed`,
whose message ends with the tail of DVC's output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ultrasound_transfer.outputs import training_record
from ultrasound_transfer.study.experiments import DVC

SWEEP_REMOTE = "sweep"
# What lets several processes share one GPU: each backend then takes memory as it needs it, instead of all of
# the GPU's memory (TensorFlow) or three quarters of it (JAX) when it starts, which leaves a second process none.
# PyTorch's caching allocator already takes memory as it needs it.
SHARED_GPU_ENVIRONMENT = {"TF_FORCE_GPU_ALLOW_GROWTH": "true", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
UNIT_EVENTS = "sweep-units"      # Dask event topic: a unit started, an attempt failed
RUNNING = re.compile(r"Running stage '([^']+)'")
RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")
OUTPUT_TAIL_LINES = 25


class UnitFailed(RuntimeError):
    """A DVC or git command of a unit failed; the message names the unit and the command."""


@dataclass(frozen=True)
class Checkout:
    """Where a worker finds the code, the data and its scratch space.

    ``repo_url``: what ``git clone`` takes (a path on a shared file system,
    or a URL); ``commit``: the sweep's commit; ``remote_url``: the shared DVC
    remote; ``workdir``: the folder for clones and their shared DVC cache on
    the worker's machine (``None``: the worker's temporary folder).
    """

    repo_url: str
    commit: str
    remote_url: str
    workdir: str | None = None


@dataclass(frozen=True)
class Unit:
    """One dataset x network of one grid point (an experiment to be)."""

    experiment: str
    dataset: str
    model: str
    params_yaml: str
    lock_yaml: str

    @property
    def label(self) -> str:
        return f"{self.experiment}: {self.dataset}/{self.model}"

    @property
    def targets(self) -> list[str]:
        return [training_record.stage(self.dataset, self.model)]


@dataclass
class UnitResult:
    """What a unit did: the stages DVC ran and those it restored from the run-cache."""

    label: str
    worker: str
    seconds: float
    executed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


def executed_stages(dvc_output: str) -> list[str]:
    """The stages a DVC command ran (``Running stage '...'``), in order."""
    return RUNNING.findall(dvc_output)


def restored_stages(dvc_output: str) -> list[str]:
    """The stages a DVC command restored from the run-cache instead of running."""
    return RESTORED.findall(dvc_output)


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with this interpreter's folder first on ``PATH``, plus ``extra``.

    The stages' ``python`` (in ``dvc.yaml``) is then this interpreter too.
    """
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **(extra or {})}


def run_command(command: list[str], cwd: Path, label: str, extra_env: dict[str, str] | None = None) -> str:
    """Run ``command``; its output, or :class:`UnitFailed` with the output's tail."""
    done = subprocess.run(command, cwd=cwd, env=command_env(extra_env), capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
        raise UnitFailed(f"{label}: `{' '.join(command)}` exited with status {done.returncode}:\n{tail}")
    return output


def configure_clone(clone: Path, checkout: Checkout, cache_dir: Path, label: str) -> None:
    """``clone`` at the sweep's commit, with the shared remote as its default and ``cache_dir`` as its cache."""
    if not (clone / ".git").exists():
        clone.parent.mkdir(parents=True, exist_ok=True)
        run_command(["git", "clone", "--quiet", "--no-checkout", checkout.repo_url, str(clone)], clone.parent, label)
    else:
        run_command(["git", "fetch", "--quiet", "origin"], clone, label)
    run_command(["git", "checkout", "--quiet", "--force", checkout.commit], clone, label)
    run_command([*DVC, "remote", "add", "--local", "--default", "--force", SWEEP_REMOTE, checkout.remote_url],
                clone, label)
    run_command([*DVC, "config", "--local", "cache.dir", str(cache_dir)], clone, label)


def worker_name() -> str:
    """The Dask worker's name, or this process's id outside Dask."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return f"pid{os.getpid()}"


def clone_for_this_worker(workdir: Path) -> Path:
    """A clone per worker thread: units of one worker reuse it (and its checked-out data)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", worker_name())
    return workdir / f"worker-{safe}-{threading.get_ident()}"


@dataclass(frozen=True)
class GpuPlan:
    """Which GPU each worker of a local cluster runs its units on.

    Worker ``i`` gets ``gpus[i % len(gpus)]`` as ``CUDA_VISIBLE_DEVICES``;
    with more workers than GPUs (``sweep --units-per-gpu``), each GPU is
    shared and every unit is told to take GPU memory as it needs it
    (:data:`SHARED_GPU_ENVIRONMENT`).
    """

    gpus: tuple[str, ...]
    workers: int

    @property
    def shared(self) -> bool:
        return self.workers > len(self.gpus)

    def environment(self, worker_index: int) -> dict[str, str]:
        """The variables worker ``worker_index``'s units run with."""
        gpu = {"CUDA_VISIBLE_DEVICES": self.gpus[worker_index % len(self.gpus)]}
        return gpu | SHARED_GPU_ENVIRONMENT if self.shared else gpu

    def describe(self) -> str:
        per_gpu = -(-self.workers // len(self.gpus))
        return (f"{len(self.gpus)} GPU(s), up to {per_gpu} units on each (memory taken as needed)" if self.shared
                else f"{len(self.gpus)} GPU(s), one per worker")


def run_unit(unit: Unit, checkout: Checkout, gpus: GpuPlan | None = None) -> UnitResult:
    """Run ``unit``'s stages with DVC in this worker's clone and push the results to the remote.

    ``gpus``: the GPUs of a local cluster (:class:`GpuPlan`); ``None`` leaves
    the worker's environment as its launcher set it (Slurm does, per job).
    """
    started = time.perf_counter()
    workdir = Path(checkout.workdir or Path(tempfile.gettempdir()) / "ultrasound-sweep")
    clone = clone_for_this_worker(workdir)
    configure_clone(clone, checkout, workdir / "dvc-cache", unit.label)
    (clone / "params.yaml").write_text(unit.params_yaml)
    (clone / "dvc.lock").write_text(unit.lock_yaml)
    name = worker_name()
    gpu = gpus.environment(int(name) if name.isdigit() else 0) if gpus else None
    output = run_command([*DVC, "repro", "--pull", *unit.targets], clone, unit.label, gpu)
    run_command([*DVC, "push", "--run-cache", *unit.targets], clone, unit.label)
    return UnitResult(unit.label, name, time.perf_counter() - started,
                      executed_stages(output), restored_stages(output))


def run_unit_reporting(unit: Unit, checkout: Checkout, gpus: GpuPlan | None = None) -> UnitResult:
    """:func:`run_unit` as a Dask task, telling the client when it starts and when an attempt fails."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(UNIT_EVENTS, f"{unit.label}: running on worker {worker.name}")
    try:
        return run_unit(unit, checkout, gpus)
    except Exception as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        worker.log_event(UNIT_EVENTS, f"{unit.label}: attempt failed on worker {worker.name}: {first_line}")
        raise
