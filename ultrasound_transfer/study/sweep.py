"""Run a grid of experiments on a Dask cluster; results come home through a DVC remote.

Usage::

    ultrasound-transfer sweep -S ft_fraction=0,0.15,0.5,1                     # one worker per visible GPU (or 1 on CPU)
    ultrasound-transfer sweep --protocol paper -S ft_fraction=0,0.15,0.5,1 --workers 4
    ultrasound-transfer sweep -S ft_fraction=0,0.15 --units-per-gpu 3            # small units: three share each GPU
    ultrasound-transfer sweep -S ft_fraction=0,1 --scheduler tcp://head:8786   # any running Dask cluster (Slurm, ...)
    ultrasound-transfer sweep -S ft_fraction=0,1 --remote /shared/dvc-remote   # a remote name, URL or path
    ultrasound-transfer sweep -S ft_fraction=0,1 --dry-run                     # the grid and its units only

``-S key=v1,v2`` takes values as ``dvc exp run --queue -S`` does; every
combination is a *grid point*, which becomes one named DVC experiment of the
current commit (``sweep-ft0.15``, or ``paper-ft0.15`` with ``--protocol``,
as ``ultrasound-transfer protocol`` names them).  The command:

1. checks every grid point's parameters, and that the code is committed
   (workers check out the commit, not this folder);
2. runs the data stages (``download``, ``normalize``, ``folds``) once per grid
   point in a scratch clone next to this repository, sharing its DVC cache
   (DVC skips what is done), and pushes their outputs to the remote;
3. sends one *unit* per dataset x network x grid point (its ``finetune``
   stage, which writes the fold networks and the SVM's features) to Dask; each worker runs it with ``dvc repro --pull``
   in its own clone and pushes outputs and run-cache to the remote
   (:mod:`ultrasound_transfer.study.sweep_units`); a failed unit is retried
   ``--retries`` times by Dask;
4. assembles each grid point, as soon as its units are done, with ``dvc exp
   run --pull`` in the scratch clone: ``finetune`` comes from
   the run-cache (the command says so, and warns if any ran), ``evaluate``
   and ``report`` run (seconds); ``dvc exp push`` brings the experiment into
   this repository, so ``dvc exp show``, ``dvc metrics diff`` and
   ``ultrasound-transfer compare`` see it as if it had run here.

Rerunning the command skips the experiments that exist and restores finished
units from the run-cache, so only what is missing runs.  When any unit finally
failed, a :class:`~ultrasound_transfer.common.PipelineError` names the points
not made (the command's exit status is then 2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ultrasound_transfer.common import PipelineError, log
from ultrasound_transfer.outputs import training_record
from ultrasound_transfer.outputs.provenance import CODE_PATHS
from ultrasound_transfer.parameters import check_params
from ultrasound_transfer.paths import RAW_DIR
from ultrasound_transfer.study.experiments import (
    DVC,
    existing_experiments,
    experiment_name,
    format_value,
    grid_points,
    parse_grid,
    resolved_params,
)
from ultrasound_transfer.study.protocols import PROTOCOLS
from ultrasound_transfer.study.sweep_units import (
    UNIT_EVENTS,
    Checkout,
    GpuPlan,
    Unit,
    UnitFailed,
    configure_clone,
    executed_stages,
    restored_stages,
    run_command,
    run_unit_reporting,
)

# Params read only at assembly (evaluate, report): units that differ only in these are the same unit
# (finetune writes both feature layers, so features.layer is among them).
ASSEMBLY_ONLY_PARAMS = ("svm", "evaluation", "features", "datasets", "models")
DATA_STAGES = ["download", "normalize", "folds"]


@dataclass(frozen=True)
class SweepRequest:
    """What ``ultrasound-transfer sweep`` was asked (its options, see :mod:`ultrasound_transfer.cli`)."""

    grid: list[str]                  # -S key=v1,v2 items
    protocol: str | None = None
    name: str | None = None          # experiment name prefix
    workers: int | None = None       # local Dask workers
    units_per_gpu: int = 1           # local workers that share each visible GPU
    scheduler: str | None = None     # address of a running Dask scheduler
    remote: str | None = None        # DVC remote: a configured name, a URL or a path
    retries: int = 2
    repo_url: str | None = None
    workdir: str | None = None
    dry_run: bool = False


@dataclass
class GridPoint:
    """One experiment of the grid: its name, ``-S`` overrides and the data stages' ``dvc.lock``."""

    name: str
    overrides: dict[str, str]
    params: dict
    lock_yaml: str = ""
    unit_keys: list[tuple] = field(default_factory=list)

    @property
    def params_yaml(self) -> str:
        """The point's whole ``params.yaml``, as the data stages and the workers get it."""
        return yaml.safe_dump(self.params, sort_keys=False)


# --- before any work ------------------------------------------------------------------------------

def uncommitted_code(repo: Path) -> list[str]:
    """Code files (:data:`~ultrasound_transfer.outputs.provenance.CODE_PATHS`) that differ from the commit (or
    are not in it): a worker's clone holds the commit only, so these must be committed first."""
    status = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=repo,
                            capture_output=True, text=True, check=True)
    return [line[3:] for line in status.stdout.splitlines() if line.strip()]


def current_commit(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def configured_remotes(repo: Path) -> tuple[dict[str, str], str | None]:
    """The repository's DVC remotes (name -> URL, relative paths resolved) and the default's name."""
    listed = subprocess.run([*DVC, "remote", "list"], cwd=repo, capture_output=True, text=True, check=True)
    remotes = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            url = parts[1]
            if "://" not in url and not os.path.isabs(url):
                url = str((repo / ".dvc" / url).resolve())     # DVC keeps local paths relative to .dvc/
            remotes[parts[0]] = url
    default = subprocess.run([*DVC, "remote", "default"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return remotes, default if default in remotes else None


def resolve_remote(spec: str | None, repo: Path) -> str:
    """``--remote``: a configured remote's name, a URL, or an absolute local path (created).

    Anything else is refused, before any work: a mistyped remote name must not
    quietly become a new folder that the workers then share.
    """
    remotes, default = configured_remotes(repo)
    if spec is None:
        if default is None:
            raise PipelineError("no DVC remote for the sweep: give --remote PATH_OR_URL (a shared folder, s3://..., "
                                "ssh://...) or configure one with: dvc remote add -d NAME URL")
        return remotes[default]
    if spec in remotes:
        return remotes[spec]
    if "://" in spec:
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute():
        configured = ", ".join(sorted(remotes)) or "none"
        raise PipelineError(
            f"--remote {spec!r} is neither a configured DVC remote (configured: {configured}) "
            f"nor a URL (s3://..., ssh://...) nor an absolute path; check the name with dvc remote list, or write "
            f"--remote {path.resolve()} if a new folder there is meant.")
    path.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def build_grid(request: SweepRequest, base_params: str) -> tuple[list[GridPoint], list[str]]:
    """The grid points of ``-S`` over the protocol's overrides, every point's params checked."""
    fixed = {key: format_value(value) for key, value in PROTOCOLS.get(request.protocol, {}).items()}
    grid = parse_grid(request.grid)
    varied = [key for key, values in grid.items() if len(values) > 1]
    prefix = request.name or request.protocol or "sweep"
    points = []
    for overrides in grid_points(fixed, grid):
        name = experiment_name(prefix, overrides, varied)
        params = resolved_params(overrides, base_params)
        try:
            check_params(params)
        except PipelineError as problem:
            raise PipelineError(f"grid point {name}: {problem}") from None
        points.append(GridPoint(name, overrides, params))
    names = [point.name for point in points]
    if len(set(names)) != len(names):
        raise PipelineError("two grid points get the same experiment name; give each -S key distinct values")
    return points, varied


def unit_key(point: GridPoint, dataset: str, model: str) -> tuple:
    """Units with equal keys compute the same thing: the params that reach finetune."""
    relevant = {key: value for key, value in point.params.items() if key not in ASSEMBLY_ONLY_PARAMS}
    return dataset, model, yaml.safe_dump(relevant, sort_keys=True)


# --- the data stages, once --------------------------------------------------------------------------

def prepare_scratch_clone(repo: Path, checkout: Checkout, workdir: Path, datasets: set[str]) -> Path:
    """The clone where the data stages run and experiments are assembled, sharing this repository's cache.

    Datasets placed here by hand (``data/raw/<dataset>``, ``data/raw/_downloads``)
    are copied in, since the ``download`` stage uses what it finds.
    """
    clone = workdir / "assembly"
    cache = subprocess.run([*DVC, "cache", "dir"], cwd=repo, capture_output=True, text=True, check=True)
    configure_clone(clone, checkout, Path(cache.stdout.strip()), "assembly")
    for name in sorted(datasets) + ["_downloads"]:
        source, target = repo / RAW_DIR / name, clone / RAW_DIR / name
        if source.is_dir() and not target.exists():
            shutil.copytree(source, target)
    return clone


def run_data_stages(clone: Path, point: GridPoint) -> str:
    """``dvc repro`` of the data stages with ``point``'s params, outputs pushed; the resulting ``dvc.lock``."""
    (clone / "params.yaml").write_text(point.params_yaml)
    output = run_command([*DVC, "repro", *DATA_STAGES], clone, f"{point.name}: data stages")
    ran = executed_stages(output)
    log("sweep", f"{point.name}: data stages {'ran ' + ', '.join(ran) if ran else 'up to date'}")
    run_command([*DVC, "push", "download", "normalize"], clone, f"{point.name}: push data")
    return (clone / "dvc.lock").read_text()


# --- the cluster ------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """GPU indices this machine offers (``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip() not in ("", "-1")]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(index) for index, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU")]


def local_gpu_plan(workers: int | None, units_per_gpu: int, gpus: list[str]) -> tuple[int, GpuPlan | None]:
    """How many local workers, and which GPU each uses: by default ``units_per_gpu`` per visible GPU, else 1.

    Several units on one GPU pay off where one cannot fill it (small images, a
    tail of a few layers: the GPU waits on each step's fixed cost); they share
    its memory, so each is told to take memory as it needs it.
    """
    if units_per_gpu < 1:
        raise PipelineError(f"--units-per-gpu {units_per_gpu}: give at least 1.")
    if units_per_gpu > 1 and not gpus:
        raise PipelineError(f"--units-per-gpu {units_per_gpu}: no GPU is visible here (CUDA_VISIBLE_DEVICES, "
                            "nvidia-smi -L); on CPUs give the number of units to run at once with --workers.")
    count = workers or max(1, len(gpus) * units_per_gpu)
    return count, GpuPlan(tuple(gpus), count) if gpus else None


def start_client(scheduler: str | None, local_plan: tuple[int, GpuPlan | None] | None):
    """A Dask client of the scheduler at ``scheduler``, or of a new local cluster of ``local_plan``'s workers
    (:func:`local_gpu_plan`); the cluster (else None); the GPUs to pin."""
    from distributed import Client, LocalCluster

    if scheduler:
        log("sweep", f"Dask scheduler {scheduler}; workers keep the GPUs their launcher gave them")
        return Client(scheduler), None, None
    count, plan = local_plan
    # One thread per worker: a unit is a DVC process that uses its GPU (or all cores) itself.
    cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None)
    log("sweep", f"local Dask cluster: {count} worker(s), {plan.describe() if plan else 'no GPU, CPU workers'}")
    return Client(cluster), cluster, plan


def announce(event) -> None:
    """Print a unit's event sent by a worker (:func:`run_unit_reporting`), as it happens."""
    _, message = event
    log("sweep", message)


# --- assembly --------------------------------------------------------------------------------------

def assemble(clone: Path, point: GridPoint, base_params: str) -> list[str]:
    """``dvc exp run --pull`` of ``point`` in the scratch clone, then ``dvc exp push`` into its origin, this repository.

    Returns the expensive stages that ran anyway (empty when the run-cache
    held every unit, as it should).
    """
    (clone / "params.yaml").write_text(base_params)
    (clone / "dvc.lock").write_text(point.lock_yaml)
    subprocess.run([*DVC, "exp", "remove", point.name], cwd=clone, capture_output=True)
    command = [*DVC, "exp", "run", "--pull", "--name", point.name]
    for key, value in point.overrides.items():
        command += ["-S", f"{key}={value}"]
    output = run_command(command, clone, f"{point.name}: assembly")
    run_command([*DVC, "exp", "push", "origin", point.name], clone, f"{point.name}: dvc exp push")
    ran = executed_stages(output)
    finetune = f"{training_record.STAGE}@"
    retrained = [stage for stage in ran if stage.startswith(finetune)]
    restored = [stage for stage in restored_stages(output) if stage.startswith(finetune)]
    log("sweep", f"{point.name}: experiment assembled ({len(restored)} finetune stage(s) from the run-cache; ran "
        f"{', '.join(ran) or 'nothing'})" + (f"; ran again: {', '.join(retrained)}" if retrained else ""))
    return retrained


def assemble_reporting(clone: Path, point: GridPoint, base_params: str, retrained: list[str]) -> bool:
    """:func:`assemble`, its retrained stages added to ``retrained``; False, logged, if it failed.

    A failed assembly (a pull or push that fails, say) loses one grid point,
    not the sweep: the other points' units are still running or done.
    """
    try:
        retrained += assemble(clone, point, base_params)
    except UnitFailed as error:
        log("sweep", f"{point.name}: assembly FAILED: {error}")
        return False
    return True


# --- main ---------------------------------------------------------------------------------------------

def plan_units(points: list[GridPoint]) -> dict[tuple, Unit]:
    """One unit per distinct dataset x network x finetune params; each point lists the keys it needs."""
    units: dict[tuple, Unit] = {}
    for point in points:
        for dataset in point.params["datasets"]:
            for model in point.params["models"]:
                key = unit_key(point, dataset, model)
                point.unit_keys.append(key)
                units.setdefault(key, Unit(point.name, dataset, model,
                                           point.params_yaml, point.lock_yaml))
    return units


def run_sweep(request: SweepRequest) -> None:
    """The whole sweep of the repository in the working directory (the module's docstring says how)."""
    repo = Path.cwd()
    # A request this machine's GPUs cannot serve fails before any work.
    local_plan = None if request.scheduler else local_gpu_plan(request.workers, request.units_per_gpu,
                                                               visible_gpus())
    base_params = (repo / "params.yaml").read_text()
    points, varied = build_grid(request, base_params)
    if not varied:
        log("sweep", "note: no -S key has several values; the grid is one experiment")
    done = existing_experiments(repo)
    todo = [point for point in points if point.name not in done]
    for point in points:
        if point.name in done:
            log("sweep", f"{point.name}: exists, skipped (dvc exp remove {point.name} to redo it)")
    if request.dry_run:
        for point in todo:
            overrides = " ".join(f"-S {key}={value}" for key, value in point.overrides.items())
            log("sweep", f"{point.name}: {overrides}; units: "
                f"{', '.join(f'{d}/{m}' for d in point.params['datasets'] for m in point.params['models'])}")
        return
    if not todo:
        log("sweep", "every experiment of the grid exists; nothing to do")
        return
    changed = uncommitted_code(repo)
    if changed:
        raise PipelineError(f"commit the code first: workers check out the commit, and these differ from it: "
                            f"{', '.join(changed)}")
    remote = resolve_remote(request.remote, repo)
    here = Path(request.workdir).resolve() if request.workdir else repo / ".dvc/tmp/sweep"
    # Workers of another machine's scheduler find no .dvc/tmp of ours: their own temporary folder then.
    workers_workdir = str(here) if request.workdir or not request.scheduler else None
    checkout = Checkout(request.repo_url or str(repo), current_commit(repo), remote, workers_workdir)
    clone = prepare_scratch_clone(repo, checkout, here, {d for point in todo for d in point.params["datasets"]})
    log("sweep", f"{len(todo)} experiment(s); remote {remote}; data stages in {clone}")
    for point in todo:
        point.lock_yaml = run_data_stages(clone, point)
    units = plan_units(todo)
    failed = run_grid(request, checkout, todo, units=units, clone=clone, base_params=base_params,
                      local_plan=local_plan)
    if failed:
        raise PipelineError(f"{len(failed)} of {len(todo)} experiment(s) not made: {', '.join(failed)}. "
                            "Rerun the same command: finished units come from the run-cache.")


def run_grid(request: SweepRequest, checkout: Checkout, points: list[GridPoint], *, units: dict[tuple, Unit],
             clone: Path, base_params: str, local_plan: tuple[int, GpuPlan | None] | None) -> list[str]:
    """Units on Dask, each point assembled when its units are done; the names of the points not made.

    ``local_plan`` is :func:`local_gpu_plan`'s, made once by :func:`run_sweep`; None with a scheduler.
    """
    from distributed import as_completed

    client, cluster, gpus = start_client(request.scheduler, local_plan)
    client.subscribe_topic(UNIT_EVENTS, announce)
    started = time.perf_counter()
    try:
        futures = {client.submit(run_unit_reporting, unit, checkout, gpus, retries=request.retries, pure=False,
                                 key=f"unit-{index}-{unit.dataset}-{unit.model}"): key
                   for index, (key, unit) in enumerate(units.items())}
        for unit in units.values():
            log("sweep", f"{unit.label}: queued")
        outcome: dict[tuple, bool] = {}
        waiting = {point.name for point in points}
        failed, retrained = [], []
        for future in as_completed(futures):
            key, unit = futures[future], units[futures[future]]
            if future.status == "error":
                error = future.exception()
                message = str(error) if isinstance(error, UnitFailed) else f"{type(error).__name__}: {error}"
                log("sweep", f"{unit.label}: FAILED after {request.retries} retries: {message}")
                outcome[key] = False
            else:
                result = future.result()
                did = (f"ran {', '.join(result.executed)}" if result.executed
                       else "restored from the run-cache" if result.restored else "up to date")
                log("sweep", f"{unit.label}: done on worker {result.worker} in {result.seconds:.0f} s ({did})")
                outcome[key] = True
            for point in points:
                if point.name in waiting and all(k in outcome for k in point.unit_keys):
                    waiting.remove(point.name)
                    assembled = all(outcome[k] for k in point.unit_keys) and assemble_reporting(
                        clone, point, base_params, retrained)
                    if not assembled:
                        failed.append(point.name)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    made = len(points) - len(failed)
    log("sweep", f"summary: {len(units)} unit(s), {sum(outcome.values())} done, "
        f"{len(outcome) - sum(outcome.values())} failed; {made} experiment(s) made in "
        f"{time.perf_counter() - started:.0f} s" + (f"; ran again at assembly: {', '.join(retrained)}"
                                                    if retrained else ""))
    return failed
