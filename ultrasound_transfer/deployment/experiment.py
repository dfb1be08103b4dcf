"""A DVC experiment's trained networks, read without touching the workspace.

``--experiment NAME`` reads what one experiment (``dvc exp show`` lists
them; a commit or branch works too) recorded of a dataset x network, through
DVC's own file system (``dvc.api.DVCFileSystem``, which takes git files from
the experiment's commit and DVC outputs from the local cache), into a
temporary folder laid out as the repository, and runs the loading there.
``dvc exp apply`` would do the same by overwriting the workspace, which a
person may be in the middle of.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.paths import EXTERNAL_DIR, FEATURES_DIR, FOLDS_DIR, METRICS_DIR, MODELS_DIR, PREPARED_DIR


def recorded_paths(dataset: str, model: str) -> list[Path]:
    """What loading, explaining and exporting one dataset x network read (the first two are git-tracked)."""
    return [Path("params.yaml"), Path("dvc.lock"), PREPARED_DIR / dataset / "manifest.csv",
            PREPARED_DIR / dataset / "images.npy", FOLDS_DIR / f"{dataset}.json",
            MODELS_DIR / dataset / model / "weights", MODELS_DIR / dataset / model / "training",
            FEATURES_DIR / dataset / model, METRICS_DIR / dataset]


# Read where the experiment has them: the external figures the model card reports.
OPTIONAL_PATHS = [EXTERNAL_DIR]


@contextlib.contextmanager
def experiment_workspace(name: str | None, *, dataset: str, model: str) -> Iterator[None]:
    """Run the block in a folder holding experiment ``name``'s files of ``dataset`` x ``model`` (``None``: here)."""
    if name is None:
        yield
        return
    from dvc.api import DVCFileSystem

    try:
        fs = DVCFileSystem(os.getcwd(), rev=name)
        fs.isfile("params.yaml")
    except Exception as error:  # noqa: BLE001 - DVC's and git's errors differ by version; the fix does not
        raise PipelineError(f"experiment {name!r} cannot be read ({type(error).__name__}: {error}); "
                            "'dvc exp show' lists the experiments.") from None
    with tempfile.TemporaryDirectory(prefix="ultrasound-transfer-experiment-") as folder:
        optional = [path for path in OPTIONAL_PATHS if fs.exists(path.as_posix())]
        for path in recorded_paths(dataset, model) + optional:
            if not fs.exists(path.as_posix()):
                raise PipelineError(f"experiment {name!r} has no {path}; it did not train {dataset} x {model} "
                                    f"(its params datasets and models), or its outputs are not in the local cache "
                                    f"(dvc exp pull).")
            target = Path(folder) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                fs.get(path.as_posix(), str(target), recursive=fs.isdir(path.as_posix()))
            except Exception as error:  # noqa: BLE001
                raise PipelineError(f"experiment {name!r}: {path} could not be read ({type(error).__name__}: "
                                    f"{error}); its outputs may be missing from the local cache (dvc exp pull "
                                    f"{name}).") from None
        with contextlib.chdir(folder):
            yield
