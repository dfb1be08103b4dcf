"""The most confident errors: which images, in which order, each once."""

import numpy as np
import pandas as pd

from ultrasound_transfer.evaluation.errors import confident_errors, errors_sheet


def predictions() -> pd.DataFrame:
    rows = [  # id, true class, dense probability of malignant; the threshold is 0.5
        ("a", "malignant", 0.10), ("b", "malignant", 0.40), ("c", "malignant", 0.90), ("d", "benign", 0.95),
        ("e", "benign", 0.60), ("f", "benign", 0.05), ("a", "malignant", 0.30),     # a again, in a second repeat
    ]
    table = pd.DataFrame(rows, columns=["id", "true_class", "dense_prob_malignant"])
    table["dense_class"] = np.where(table["dense_prob_malignant"] >= 0.5, "malignant", "benign")
    return table


def test_false_negatives_lowest_first_false_positives_highest_first_each_image_once():
    found = confident_errors(predictions(), classifier="dense", malignant="malignant", n=4)
    assert found["false negatives"]["id"].tolist() == ["a", "b"]
    assert found["false negatives"]["dense_prob_malignant"].tolist() == [0.10, 0.40]
    assert found["false positives"]["id"].tolist() == ["d", "e"]
    assert confident_errors(predictions(), classifier="dense", malignant="malignant", n=1)["false positives"][
        "id"].tolist() == ["d"]


def test_the_sheet_has_a_row_per_kind_of_error_and_shows_the_images_read():
    images = np.zeros((6, 32, 32), np.uint8)
    images[3] = 255                                   # d, the most confident false positive, is white
    sheet = errors_sheet(predictions(), images, list("abcdef"), malignant="malignant", classifiers=("dense",))
    assert sheet.shape[0] == 2 * (112 + 18) + 2
    false_positives = sheet[112 + 18 + 2:]
    assert false_positives[:112, 150:266].mean() > 200          # the first tile of that row is d
