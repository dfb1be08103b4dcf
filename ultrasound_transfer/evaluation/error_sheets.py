"""The most confident errors of the test folds, as a contact sheet per network, for failure analysis.

A reader who wants to know how a network fails looks first at the cases it
got most confidently wrong: the malignant images it gave the lowest
probability of malignant (false negatives at the operating point) and the
benign ones it gave the highest (false positives).  Each image is read as
it was when it was in a test fold (pooled out-of-fold predictions); with
repeated CV an image has one prediction per repeat, and its most wrong is
shown.  The tiles are the squares the network read (``data/prepared``);
``ultrasound-transfer explain`` on the listed files draws where it looked.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ERRORS_PER_KIND = 4       # images per row of the sheet
TILE = 112                # px per image tile
LABEL_WIDTH = 150         # px of the row label


def confident_errors(reading: pd.DataFrame, *, n: int = ERRORS_PER_KIND) -> dict[str, pd.DataFrame]:
    """``false negatives`` (lowest probability first) and ``false positives`` (highest first) at the operating point.

    ``reading`` is one classifier's pooled out-of-fold reading of the test images, columns ``id``,
    ``truly_malignant``, ``probability`` (of malignant) and ``called_malignant``
    (:func:`ultrasound_transfer.outputs.cv_results.malignant_view`); each image appears once, at its most wrong
    repeat.
    """
    truly, called = reading["truly_malignant"], reading["called_malignant"]
    negatives = reading[truly & ~called].sort_values("probability", kind="stable")
    positives = reading[~truly & called].sort_values("probability", ascending=False, kind="stable")
    return {"false negatives": negatives.drop_duplicates("id").head(n),
            "false positives": positives.drop_duplicates("id").head(n)}


def tile(square: np.ndarray, caption: str) -> np.ndarray:
    """One image of the sheet, enlarged to ``TILE`` px without smoothing, over a band with its caption."""
    picture = cv2.resize(square, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    band = np.zeros((18, TILE), np.uint8)
    cv2.putText(band, caption[:18], (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1, cv2.LINE_AA)
    return np.vstack([picture, band])


def errors_sheet(readings: dict[str, pd.DataFrame], images: np.ndarray, ids: list[str]) -> np.ndarray:
    """One row per classifier (``readings``: name -> its reading, as :func:`confident_errors` takes it) and kind
    of error: its label, then the images with their probability of malignant."""
    position = {image_id: i for i, image_id in enumerate(ids)}
    rows = []
    for classifier, reading in readings.items():
        for kind, found in confident_errors(reading).items():
            label = np.zeros((TILE + 18, LABEL_WIDTH), np.uint8)
            for line, text in enumerate((classifier, kind, f"{len(found)} shown")):
                cv2.putText(label, text, (4, 20 + 18 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
            tiles = [tile(images[position[row.id]], f"p {row.probability:.2f} {Path(row.id).stem}")
                     for row in found.itertuples()]
            tiles += [np.zeros((TILE + 18, TILE), np.uint8)] * (ERRORS_PER_KIND - len(tiles))
            rows.append(np.hstack([label, *[np.pad(t, ((0, 0), (2, 2))) for t in tiles]]))
            rows.append(np.full((2, rows[-1].shape[1]), 128, np.uint8))
    return np.vstack(rows[:-1])
