"""``ultrasound-transfer explain``: where the networks look, by Grad-CAM (Selvaraju et al., ICCV 2017).

For a split's network and an image, Grad-CAM weighs each channel of the last
convolutional block's output ``A`` by the mean over positions of the gradient
of the malignant score ``y`` with respect to it, ``alpha_c = mean_ij dy/dA_cij``,
and keeps the positive part of ``sum_c alpha_c A_c``: the regions whose
activation raises the score.  The score is the dense head's malignant
log-odds, the softmax's input ``z_malignant - z_benign`` (the probability
itself saturates, and its gradient vanishes, where the network is sure).
The ensemble's map is the mean of the splits' maps, scaled to 0..1 per
image; it is drawn over the square the networks read (letterboxed as in
training), not over the original frame.

The layer is the last convolutional block of each network
(:data:`GRADCAM_LAYERS`), the one before global pooling: VGG's last
convolution before its final max-pooling (twice the pooled resolution),
ResNet's last residual block output, InceptionV3's last mixed block.  The
maps are as coarse as those blocks: 1/16 (VGG) or 1/32 (ResNet, Inception) of
the input side, 7 x 7 or so at 224 px.  Where that block is under 2 x 2 (small
inputs: InceptionV3 below 139 px), the block before it is read
(:data:`EARLIER_LAYERS`), and the log says so.

Gradients come from the backend: TensorFlow (the default) and PyTorch are
supported; on JAX the command refuses with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd

from ultrasound_transfer.common import PipelineError, atomic_dir, log
from ultrasound_transfer.deployment.predict import (
    SquaredFrame,
    array_batches,
    ensemble_probabilities,
    frame_warning,
    in_batches,
    squared_frames,
)
from ultrasound_transfer.deployment.scans import ScanProblem, check_output_folder, scan_files
from ultrasound_transfer.deployment.trained import NOVELTY, TrainedNetwork, load_requested_network
from ultrasound_transfer.networks.backbones import HIDDEN_LAYER, OUTPUT_LAYER, to_network_input
from ultrasound_transfer.outputs.cv_results import class_column, prob_column, threshold_column

# Keyed by the names of ultrasound_transfer.choices.MODELS (a test checks each is the last convolutional block).
GRADCAM_LAYERS = {
    "VGG16": "block5_conv3",
    "VGG19": "block5_conv4",
    "ResNet50": "conv5_block3_out",
    "ResNet101": "conv5_block3_out",
    "InceptionV3": "mixed10",
}
# The block before it, where the last one's map is under 2 x 2 at this input size (InceptionV3 below 139 px is
# 1 x 1: one number, no map); the log says when it is used.
EARLIER_LAYERS = {
    "VGG16": "block4_conv3",
    "VGG19": "block4_conv4",
    "ResNet50": "conv4_block6_out",
    "ResNet101": "conv4_block23_out",
    "InceptionV3": "mixed7",
}
GRADIENT_BACKENDS = ("tensorflow", "torch")
EXPLANATIONS_DIR = Path("explanations")
INDEX_FILE = "explanations.csv"     # which overlay shows which frame, and what the ensemble read there
OVERLAY_WEIGHT = 0.4      # share of the heat map in the overlay
OVERLAY_SIDE = 256        # px: the square is drawn at least this large, so a 80-px input stays readable
CAM_BATCH = 32            # frames per gradient pass: the tape holds every activation of the batch
STEM_CHARACTERS = 100     # of a scan's file name kept in its overlay's name (a file system allows 255 bytes)


def gradcam_layer(network: keras.Model, model_name: str) -> str:
    """The layer Grad-CAM reads: the last convolutional block, or the one before where the last is under 2 x 2."""
    last = GRADCAM_LAYERS[model_name]
    if min(network.get_layer(last).output.shape[1:3]) >= 2:
        return last
    return EARLIER_LAYERS[model_name]


def check_gradient_backend() -> None:
    backend = keras.backend.backend()
    if backend not in GRADIENT_BACKENDS:
        raise PipelineError(f"Grad-CAM needs gradients from the Keras backend; {backend} is not supported here. "
                            "Run explain with KERAS_BACKEND=tensorflow (the default) or torch.")


def score_gradients(upper: keras.Model, maps: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """d(malignant log-odds)/d(maps), summed over the batch's independent images: per image its own gradient."""
    difference = kernel[:, 1] - kernel[:, 0]
    offset = float(bias[1] - bias[0])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(maps)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            score = tf.linalg.matvec(upper(tensor, training=False), tf.constant(difference)) + offset
        return tape.gradient(score, tensor).numpy()
    tensor = keras.ops.convert_to_tensor(maps).detach().requires_grad_(True)
    score = upper(tensor, training=False) @ keras.ops.convert_to_tensor(difference) + offset
    score.sum().backward()
    return keras.ops.convert_to_numpy(tensor.grad)


def grad_cam(fold: keras.Model, inputs: np.ndarray, layer: str, batch_size: int = CAM_BATCH) -> np.ndarray:
    """Grad-CAM maps (N, h, w) of ``fold`` for the preprocessed ``inputs``, at ``layer``, not yet scaled."""
    lower = keras.Model(fold.inputs, fold.get_layer(layer).output)
    upper = keras.Model(fold.get_layer(layer).output, fold.get_layer(HIDDEN_LAYER).output)
    kernel, bias = (keras.ops.convert_to_numpy(v).astype(np.float32) for v in fold.get_layer(OUTPUT_LAYER).weights)
    found = []
    for batch in array_batches(inputs, batch_size):    # a cine loop of hundreds of frames, a batch at a time
        maps = np.asarray(keras.ops.convert_to_numpy(lower([batch], training=False)), dtype=np.float32)
        alpha = score_gradients(upper, maps, kernel, bias).mean(axis=(1, 2), keepdims=True)
        found.append(np.maximum((alpha * maps).sum(axis=-1), 0.0))
    return np.concatenate(found)


def ensemble_cam(trained: TrainedNetwork, squares: np.ndarray, *, layer: str) -> np.ndarray:
    """The mean of the splits' Grad-CAM maps at ``layer``, upsampled to the square and scaled to 0..1 per image."""
    check_gradient_backend()
    inputs = to_network_input(squares, trained.model_name, preprocessing=trained.study.recipe.input_preprocessing)
    maps = np.mean([grad_cam(fold, inputs, layer) for fold in trained.folds], axis=0)
    size = squares.shape[1]
    cams = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in maps])
    peaks = cams.reshape(len(cams), -1).max(axis=1)
    return cams / np.where(peaks > 0, peaks, 1.0)[:, None, None]


def overlay(square: np.ndarray, cam: np.ndarray, caption: str) -> np.ndarray:
    """The square (gray) with the map in the JET colours over it, and a caption band above (BGR uint8)."""
    side = max(OVERLAY_SIDE, square.shape[0])
    gray = cv2.resize(np.clip(square, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    heat = cv2.applyColorMap(np.round(cv2.resize(cam, (side, side)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    picture = cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - OVERLAY_WEIGHT, heat, OVERLAY_WEIGHT, 0)
    band = np.zeros((22, side, 3), np.uint8)
    cv2.putText(band, caption[:60], (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, picture])


def picture_name(index: int, frame: SquaredFrame) -> str:
    """``0003-name.png`` (``0003-name-frame2.png`` for a frame of a cine loop): unique by its number, in the order
    given; the scan's name is shortened to :data:`STEM_CHARACTERS`, so that a long but legal file name still
    leaves room for the number (``explanations.csv`` maps each overlay to its file in full)."""
    stem = (Path(frame.file).stem or "scan")[:STEM_CHARACTERS]
    return f"{index:04d}-{stem}" + (f"-frame{frame.frame}" if frame.frame > 1 else "") + ".png"


@dataclass(frozen=True)
class ExplainRequest:
    """What ``ultrasound-transfer explain`` was asked."""

    dataset: str
    model: str
    paths: list[str]
    out: Path | None = None           # default explanations/<dataset>-<model>/
    experiment: str | None = None

    @property
    def out_dir(self) -> Path:
        return self.out or EXPLANATIONS_DIR / f"{self.dataset}-{self.model}"


def explain_batch(trained: TrainedNetwork, frames: list[SquaredFrame], *, layer: str, folder: Path,
                  first: int) -> list[dict]:
    """Overlays of one batch of frames into ``folder``, numbered from ``first``; their rows of the index."""
    squares = np.stack([f.square for f in frames])
    cams = ensemble_cam(trained, squares, layer=layer)
    outputs = ensemble_probabilities(trained, squares)
    benign, malignant = trained.class_names
    threshold = trained.thresholds["dense"]
    rows = []
    for i, (frame, cam) in enumerate(zip(frames, cams)):
        p = float(outputs["dense"][i, 0])
        novelty = float(outputs[NOVELTY][i, 0])
        warning = frame_warning(frame, novelty, trained.novelty_threshold)
        called = malignant if p >= threshold else benign
        name = picture_name(first + i, frame)
        caption = f"{trained.model_name} p(malignant) {p:.2f} at {threshold:.2f}: {called}" + (
            " (UNLIKE TRAINING)" if warning else "")
        if not cv2.imwrite(str(folder / name), overlay(frame.square, cam, caption)):
            raise PipelineError(f"could not write the overlay {name} (OpenCV refused it).")
        rows.append({"overlay": name, "file": frame.file, "frame": frame.frame,
                     "status": "warning" if warning else "ok", "note": warning, "gradcam_layer": layer,
                     prob_column("dense", malignant): p, threshold_column("dense"): threshold,
                     class_column("dense"): called, NOVELTY: novelty})
    return rows


def run_explain(request: ExplainRequest) -> list[Path]:
    """Write one Grad-CAM overlay per frame into the request's folder (replaced as a whole, or left as it was).

    Frames stream through in batches of :data:`CAM_BATCH`; the first file that cannot be read stops the
    command, and the folder being written is removed with the scans' pixels in it."""
    check_gradient_backend()
    check_output_folder(request.out_dir, marker=INDEX_FILE)
    files = scan_files(request.paths)
    trained = load_requested_network(request.dataset, request.model, experiment=request.experiment,
                                     command="explain")
    layer = gradcam_layer(trained.folds[0], trained.model_name)
    if layer != GRADCAM_LAYERS[trained.model_name]:
        log("explain", f"{trained.model_name}: {GRADCAM_LAYERS[trained.model_name]} is under 2 x 2 at "
                       f"{trained.image_size} px; the map is read at {layer}, the block before")
    index: list[dict] = []
    with atomic_dir(request.out_dir) as folder:
        stream = squared_frames(files, image_size=trained.image_size, resize=trained.resize)
        for batch in in_batches(stream, CAM_BATCH):
            problem = next((item for item in batch if isinstance(item, ScanProblem)), None)
            if problem is not None:
                raise PipelineError(f"{problem.error} (explain writes nothing when a file cannot be read: replace "
                                    "or remove it, then run again)")
            index += explain_batch(trained, batch, layer=layer, folder=folder, first=len(index) + 1)
        pd.DataFrame(index).to_csv(folder / INDEX_FILE, index=False)
    flagged = sum(row["status"] == "warning" for row in index)
    log("explain", f"{request.dataset}/{request.model}: {len(index)} Grad-CAM overlays in {request.out_dir}"
                   + (f"; {flagged} of them of frames unlike the study's images (status warning in {INDEX_FILE})"
                      if flagged else ""))
    return [request.out_dir / row["overlay"] for row in index]
