"""``ultrasound-transfer export``: the ensemble as files another tool loads, with a model card.

One folder per dataset x network (default ``exports/<dataset>-<model>/``):

* ``<dataset>-<model>.keras``: the ensemble network
  (:mod:`ultrasound_transfer.deployment.trained`) of built-in Keras layers
  only, so ``keras.saving.load_model`` reads it without this project;
* ``<dataset>-<model>.onnx``: the same network through Keras' own ONNX export
  (``model.export(format="onnx")``; on TensorFlow it goes through tf2onnx),
  for ONNX Runtime and other ONNX tools; left out with ``--formats keras``;
* ``export.json``: what a program needs beside the file (input size and
  resize rule, class names, outputs, each classifier's operating point, the
  novelty threshold, the frozen part's fingerprint, and the study's
  provenance: the parameters it was trained under, the code revision, the
  data's hashes, all as the trained study recorded them, never today's
  ``params.yaml``);
* ``model_card.md``: the model card (:mod:`ultrasound_transfer.deployment.model_card`).

The folder is written whole or not at all.  What the files do not hold is
decoding and squaring a frame (``normalize.resize``): that depends on the
image's size and is done beforehand, as docs/using-the-model.md shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ultrasound_transfer.choices import CLASSIFIERS, EXPORT_FORMATS
from ultrasound_transfer.common import PipelineError, atomic_dir, log, read_json, write_json
from ultrasound_transfer.deployment.model_card import model_card
from ultrasound_transfer.deployment.scans import check_output_folder
from ultrasound_transfer.deployment.trained import (
    GRAY_INPUT,
    NOVELTY,
    EnsembleParts,
    TrainedNetwork,
    requested_network,
)
from ultrasound_transfer.evaluation.novelty import (
    CONSTANT_FRAME_STD,
    NOVELTY_QUANTILE,
    STRUCTURE_CORRELATION,
)
from ultrasound_transfer.outputs import classifiers as classifiers_output
from ultrasound_transfer.outputs import cv_results, external_results
from ultrasound_transfer.outputs.provenance import file_sha256
from ultrasound_transfer.outputs.trained_study import recorded_params

EXPORTS_DIR = Path("exports")
# The packages ONNX export needs (requirements.txt: they install with the package).
ONNX_MODULES = ("onnx", "onnxruntime", "tf2onnx")


@dataclass(frozen=True)
class ExportRequest:
    """What ``ultrasound-transfer export`` was asked."""

    dataset: str
    model: str
    out: Path | None = None                  # default exports/<dataset>-<model>/
    formats: tuple[str, ...] = EXPORT_FORMATS
    experiment: str | None = None

    @property
    def out_dir(self) -> Path:
        return (self.out or EXPORTS_DIR / f"{self.dataset}-{self.model}").absolute()


def export_facts(trained: TrainedNetwork, files: dict[str, str]) -> dict:
    """``export.json``: how to feed the files and read their outputs, and where they came from."""
    benign, malignant = trained.class_names
    recipe, fitted = trained.study.recipe, trained.study.classifiers
    return {
        "dataset": trained.dataset, "model": trained.model_name, "files": files,
        "input": {"name": GRAY_INPUT, "shape": [None, trained.image_size, trained.image_size], "dtype": "float32",
                  "values": "gray levels 0..255 of the frame after decoding to gray and squaring",
                  "resize": trained.resize, "gray": recipe.preprocessing.gray},
        "classes": trained.class_names, "positive_class": malignant,
        "outputs": {name: f"ensemble probability of {malignant}, (N, 1)" for name in CLASSIFIERS}
        | {f"{name}_splits": f"each split's probability of {malignant}, (N, {len(trained.splits)})"
           for name in CLASSIFIERS}
        | {NOVELTY: "how unlike the study's images the frame is, (N, 1); 1 is a typical held-out study image"},
        "operating_points": {name: {"threshold": value, "rule": fitted.operating_point,
                                    "call": f"{malignant} when the probability >= threshold, else {benign}"}
                             for name, value in trained.thresholds.items()},
        "novelty": {"threshold": trained.novelty_threshold,
                    "rule": f"warn when novelty > threshold ({NOVELTY_QUANTILE:.0%} of the study's held-out images "
                            f"stay under it), when the frame's gray levels have a standard deviation under "
                            f"{CONSTANT_FRAME_STD:g}, or when its neighbouring pixels correlate under "
                            f"{STRUCTURE_CORRELATION:g} (mean lag-1 autocorrelation across and down)"},
        "splits": len(trained.splits), "frozen_sha256": recipe.frozen_sha256,
        "keras": keras.__version__, "backend": keras.backend.backend(),
        "trained_with": {"keras": recipe.keras, "backend": recipe.backend, "weights": recipe.weights,
                         "weights_sha256": recipe.weights_sha256, "input_preprocessing": recipe.input_preprocessing},
        "params": recorded_params(trained.study),
        "provenance": {"training": recipe.provenance, "classifiers": fitted.provenance},
    }


def external_metrics(dataset: str, model: str) -> dict[str, dict]:
    """External results of this very study (its classifiers, by SHA-256) on other datasets, where they were run."""
    own = file_sha256(classifiers_output.path(dataset, model))
    found = {}
    for path in sorted(external_results.EXTERNAL_DIR.glob(f"{dataset}-to-*/{model}.json")):
        metrics = read_json(path)
        if metrics.get("train") == dataset and metrics.get("classifiers_sha256") == own:
            found[metrics["test"]] = metrics
        else:
            log("export", f"{path} is left out of the model card: it was computed from other classifiers than "
                          "this study's (run 'dvc repro' to update it)")
    return found


def check_formats(formats: tuple[str, ...]) -> None:
    """Refuse unknown formats, and ONNX where its packages are missing, before any work."""
    import importlib.util

    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown or not formats:
        raise PipelineError(f"--formats {','.join(formats)}: choose among {', '.join(EXPORT_FORMATS)}.")
    missing = [m for m in ONNX_MODULES if importlib.util.find_spec(m) is None]
    if "onnx" in formats and missing:
        raise PipelineError(f"ONNX export needs {', '.join(missing)}, which are not installed in this environment; "
                            "they are in requirements.txt: pip install -e . (or export --formats keras).")


def export_part(part: keras.Model, path: Path, sample) -> None:
    """One part through Keras' own ONNX export, or a refusal that says what is missing."""
    part.predict(sample, verbose=0)     # Keras exports only models that were called
    try:
        part.export(str(path), format="onnx", verbose=False)
    except ImportError as error:
        raise PipelineError(f"ONNX export needs {error.name or 'onnx'}, which is not installed in this environment: "
                            "pip install -e . (or export --formats keras).") from None
    except Exception as error:  # noqa: BLE001 - the converter's own error, with the way around it
        raise PipelineError(f"Keras' ONNX export failed on the {keras.backend.backend()} backend "
                            f"({type(error).__name__}: {error}); export --formats keras, or run it on "
                            "KERAS_BACKEND=tensorflow.") from None


def write_onnx(parts: EnsembleParts, path: Path, *, image_size: int, scratch: Path) -> None:
    """The ensemble as one ONNX graph, assembled from the ONNX exports of its parts.

    Converting the whole ensemble at once holds every split's graph in the
    converter together: for the demo's ResNet50 ensemble of five splits that
    was killed for memory on a 24 GB machine, where part by part (the largest
    part sets the peak) it peaked at 9 GB (docs/using-the-model.md).  The front runs once, each split's tail reads its
    outputs (``Identity`` links), and ``Mean`` and ``Concat`` nodes give the
    outputs the Keras ensemble gives.
    """
    import onnx
    from onnx import TensorProto, compose, helper

    sample = np.zeros((1, image_size, image_size), np.float32)
    export_part(parts.front, scratch / "front.onnx", sample)
    front = onnx.load(scratch / "front.onnx")
    cut_names = [output.name for output in front.graph.output]
    nodes, initializers = list(front.graph.node), list(front.graph.initializer)
    cached = parts.front.predict(sample, verbose=0)
    readings: dict[str, list[str]] = {name: [] for name in (*CLASSIFIERS, NOVELTY)}
    for tail in parts.tails:
        export_part(tail, scratch / f"{tail.name}.onnx", [cached[f"cut{i}"] for i in range(len(cached))])
        graph = compose.add_prefix(onnx.load(scratch / f"{tail.name}.onnx"), f"{tail.name}/").graph
        inputs = {i.name.removeprefix(f"{tail.name}/"): i.name for i in graph.input}
        if set(inputs) != set(cut_names):
            raise PipelineError(f"ONNX export: the tail {tail.name} reads {sorted(inputs)}, the front gives "
                                f"{sorted(cut_names)}; the parts do not fit together.")
        nodes += [helper.make_node("Identity", [name], [inputs[name]], name=f"{tail.name}/link_{name}")
                  for name in cut_names]
        nodes += list(graph.node)
        initializers += list(graph.initializer)
        for name in readings:
            readings[name].append(f"{tail.name}/{name}")
    outputs = []
    for name, values in readings.items():
        nodes.append(helper.make_node("Mean", values, [name], name=f"mean_{name}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1]))
        if name in CLASSIFIERS:
            nodes.append(helper.make_node("Concat", values, [f"{name}_splits"], axis=1, name=f"concat_{name}"))
            outputs.append(helper.make_tensor_value_info(f"{name}_splits", TensorProto.FLOAT, ["batch", len(values)]))
    graph = helper.make_graph(nodes, f"{parts.front.name.removesuffix('_front')}_ensemble", list(front.graph.input),
                              outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=list(front.opset_import), ir_version=front.ir_version,
                              producer_name="ultrasound-transfer")
    size = model.ByteSize()
    if size >= 2**31:
        raise PipelineError(f"the ONNX ensemble would be {size / 2**30:.1f} GB, over the 2 GB a single ONNX file "
                            "holds (protobuf's limit); export --formats keras, or fewer splits (cv.repeats).")
    onnx.checker.check_model(model)
    onnx.save(model, path)
    for part in scratch.glob("*.onnx"):
        part.unlink()


def run_export(request: ExportRequest) -> Path:
    """Write the export folder of one dataset x network; returns it."""
    check_formats(request.formats)
    out = request.out_dir
    check_output_folder(out, marker="export.json")
    with requested_network(request.dataset, request.model, experiment=request.experiment,
                           command="export") as trained:
        internal = cv_results.load_metrics(request.dataset, request.model)
        external = external_metrics(request.dataset, request.model)
    stem = f"{request.dataset}-{request.model}"
    files = {fmt: f"{stem}.{fmt}" for fmt in request.formats}
    with atomic_dir(out) as folder:
        if "keras" in files:
            trained.network.save(folder / files["keras"])
        if "onnx" in files:
            scratch = folder / ".onnx-parts"
            scratch.mkdir()
            write_onnx(trained.parts, folder / files["onnx"], image_size=trained.image_size, scratch=scratch)
            scratch.rmdir()
        write_json(folder / "export.json", export_facts(trained, files))
        (folder / "model_card.md").write_text(model_card(trained, internal=internal, external=external,
                                                         files=files, experiment=request.experiment))
    log("export", f"{request.dataset}/{request.model}: {', '.join(files.values())}, export.json and "
                  f"model_card.md in {out}")
    return out
