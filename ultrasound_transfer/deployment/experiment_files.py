"""The files of one trained network as a DVC experiment recorded them, read without touching the workspace.

``--experiment NAME`` reads what one experiment (``dvc exp show`` lists
them; a commit or branch works too) recorded of a dataset x network, through
DVC's own file system (``dvc.api.DVCFileSystem``, which takes git files from
the experiment's commit and DVC outputs from the local cache), into a
private temporary folder laid out as the repository, and runs the command
there.  ``dvc exp apply`` would do the same by overwriting the workspace,
which a person may be in the middle of.  Only that network's files are
copied (:func:`network_files`): another network's missing outputs do not
matter.  (Not to be confused with :mod:`ultrasound_transfer.study.experiments`,
which names and lists the experiments of a sweep.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ultrasound_transfer.common import PARAMS_FILE, PipelineError, private_temporary_directory
from ultrasound_transfer.outputs import classifiers, cv_results, external_results, fold_networks, training_record

TEMPORARY_PREFIX = "ultrasound-transfer-experiment-"


def network_files(dataset: str, model: str) -> list[Path]:
    """What loading, explaining and exporting one dataset x network read: its trained study and its figures."""
    return [fold_networks.folder(dataset, model), training_record.folder(dataset, model),
            classifiers.path(dataset, model), cv_results.metrics_path(dataset, model),
            cv_results.predictions_path(dataset, model)]


def optional_files(fs, dataset: str, model: str) -> list[Path]:
    """What the experiment may have besides: its params (for the note on edits) and its external figures."""
    found = [PARAMS_FILE] if fs.exists(PARAMS_FILE.as_posix()) else []
    root = external_results.EXTERNAL_DIR.as_posix()
    if fs.isdir(root):
        for pair in fs.ls(root, detail=False):
            name = Path(pair).name
            candidate = external_results.EXTERNAL_DIR / name / f"{model}.json"
            if name.startswith(f"{dataset}-to-") and fs.exists(candidate.as_posix()):
                found.append(candidate)
    return found


def resolve_experiment(name: str) -> None:
    """Refuse a name that is neither an experiment of this repository nor a commit or branch, saying so."""
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import resolve_name
    from scmrepo.exceptions import RevError

    try:
        with Repo(os.getcwd()) as repo:
            if resolve_name(repo.scm, name).get(name) is not None:
                return
            repo.scm.resolve_rev(name)
    except RevError:
        raise PipelineError(f"--experiment {name}: no experiment, commit or branch of this repository has that "
                            "name; 'dvc exp show' (or 'dvc exp list') lists the experiments.") from None
    except Exception as error:  # noqa: BLE001 - DVC's and git's errors differ by version; the fix does not
        raise PipelineError(f"--experiment {name}: the experiments cannot be read here ({type(error).__name__}: "
                            f"{error}); run from the repository root.") from None


@contextlib.contextmanager
def experiment_files(name: str | None, *, dataset: str, model: str) -> Iterator[None]:
    """Run the block in a folder holding experiment ``name``'s files of ``dataset`` x ``model`` (``None``: here)."""
    if name is None:
        yield
        return
    from dvc.api import DVCFileSystem

    resolve_experiment(name)
    try:
        fs = DVCFileSystem(os.getcwd(), rev=name)
        wanted = network_files(dataset, model)
        missing = [path for path in wanted if not fs.exists(path.as_posix())]
    except Exception as error:  # noqa: BLE001 - as above
        raise PipelineError(f"experiment {name!r} cannot be read ({type(error).__name__}: {error}); "
                            "'dvc exp show' lists the experiments.") from None
    if missing:
        raise PipelineError(f"experiment {name!r} has no {missing[0]}: it did not train and evaluate {dataset} x "
                            f"{model} (its params datasets and models, 'dvc exp show'), or it ran with an older "
                            "version of this project.")
    with private_temporary_directory(TEMPORARY_PREFIX) as folder:
        for path in wanted + optional_files(fs, dataset, model):
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get(path.as_posix(), str(target), recursive=fs.isdir(path.as_posix()))
            except Exception as error:  # noqa: BLE001
                raise PipelineError(f"experiment {name!r}: {path} could not be read ({type(error).__name__}: "
                                    f"{error}); its outputs may be missing from the local cache (dvc exp pull "
                                    f"{name}).") from None
        with contextlib.chdir(folder):
            yield
