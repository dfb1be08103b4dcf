"""Every file a stage reads is declared in dvc.yaml: a dependency, or one of its own outputs.

Each stage runs here, in-process and on tiny params, while a Python audit hook
records every file it opens for reading; any read below the project that
dvc.yaml does not declare would let ``dvc repro`` call the stage up to date
after that file changed.  (Code files are covered by test_source_files.py.)
"""

import sys
from pathlib import Path

import pytest
import yaml

from stages import check_params, download, evaluate, external, finetune, folds, normalize, report
from tests.conftest import REPO

RECORDING: list[Path] | None = None


def record_reads(event: str, args: tuple) -> None:
    # builtins.open (numpy, pandas, json, yaml ...) passes a mode; os.open (fsync of written files) does not.
    if RECORDING is not None and event == "open" and isinstance(args[0], (str, Path)) and isinstance(args[1], str):
        if not any(flag in args[1] for flag in "wax+"):
            RECORDING.append(Path(args[0]).resolve())


sys.addaudithook(record_reads)     # hooks cannot be removed: it records only while RECORDING is a list

STAGES = [   # (module, arguments, dvc.yaml name, template values)
    (check_params, [], "check_params", {}),
    (download, ["phantom"], "download", {"item": "phantom"}),
    (normalize, ["phantom"], "normalize", {"item": "phantom"}),
    (folds, ["phantom"], "folds", {"item": "phantom"}),
    (finetune, ["phantom", "VGG16"], "finetune", {"item.dataset": "phantom", "item.model": "VGG16"}),
    (evaluate, ["phantom", "VGG16"], "evaluate", {"item.dataset": "phantom", "item.model": "VGG16"}),
    *[(module, args, name, {"item": "phantom_site_b"}) for module, args, name in
      [(download, ["phantom_site_b"], "download"), (normalize, ["phantom_site_b"], "normalize"),
       (folds, ["phantom_site_b"], "folds")]],
    *[(module, ["phantom_site_b", "VGG16"], name, {"item.dataset": "phantom_site_b", "item.model": "VGG16"})
      for module, name in [(finetune, "finetune"), (evaluate, "evaluate")]],
    (external, ["phantom", "phantom_site_b", "VGG16"], "external",
     {"item.pair.train": "phantom", "item.pair.test": "phantom_site_b", "item.model": "VGG16"}),
    (report, [], "report", {}),
]


def declared_paths(name: str, values: dict) -> list[str]:
    """Deps and outputs (plain, metrics, plots) of a dvc.yaml stage, templates filled in."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    spec = spec.get("do", spec)
    paths = []
    for section in ("deps", "outs", "metrics", "plots"):
        for entry in spec.get(section, []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            for key, value in values.items():
                path = path.replace("${" + key + "}", value)
            paths.append(path)
    return paths


def test_every_file_a_stage_reads_is_declared_in_dvc_yaml(project):
    global RECORDING
    project.write_params({"datasets": ["phantom", "phantom_site_b"], "models": ["VGG16"], "image_size": 32,
                          "external": [{"train": "phantom", "test": "phantom_site_b"}],
                          "download": {"phantom": {"count": 24, "images_per_patient": 2, "native_size": 48},
                                       "phantom_site_b": {"count": 24, "images_per_patient": 2, "native_size": 56}},
                          "cv": {"n_splits": 3},
                          "finetune": {"epochs": 1, "batch_size": 8, "validation_fraction": 0.25},
                          "svm": {"C_grid": [0.1, 1.0], "inner_folds": 2}, "evaluation": {"bootstrap_resamples": 200}})
    root = project.root.resolve()
    undeclared = {}
    for module, args, name, values in STAGES:
        RECORDING = []
        try:
            module.main(args)
            reads = {str(p.relative_to(root)) for p in RECORDING if p.is_relative_to(root)}
        finally:
            RECORDING = None
        declared = declared_paths(name, values)
        internal = ("params.yaml", "models/phantom/VGG16/.unfinished/",   # params are declared apart; resume state
                    "models/phantom_site_b/VGG16/.unfinished/")
        missing = sorted(r for r in reads if not r.startswith(internal) and ".tmp-" not in r   # its own temporaries
                         and not any(r == d or r.startswith(d.rstrip("/") + "/") for d in declared))
        if missing:
            undeclared[name] = missing
        assert reads or name == "download", f"{name} read nothing: the audit hook saw no reads"
    assert undeclared == {}, "dvc.yaml lacks these deps"


def test_the_recorder_sees_numpy_and_pandas_reads(tmp_path):
    import numpy as np
    import pandas as pd

    global RECORDING
    np.save(tmp_path / "a.npy", np.zeros(2))
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "b.csv", index=False)
    RECORDING = []
    try:
        np.load(tmp_path / "a.npy")
        pd.read_csv(tmp_path / "b.csv")
        seen = {p.name for p in RECORDING}
    finally:
        RECORDING = None
    assert {"a.npy", "b.csv"} <= seen


pytestmark = pytest.mark.filterwarnings("ignore")
