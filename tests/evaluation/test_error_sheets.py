"""The most confident errors: which images, in which order, each once."""

import numpy as np
import pandas as pd

from ultrasound_transfer.evaluation.error_sheets import confident_errors, errors_sheet


def reading() -> pd.DataFrame:
    rows = [  # id, truly malignant, probability of malignant; the threshold is 0.5
        ("a", True, 0.10), ("b", True, 0.40), ("c", True, 0.90), ("d", False, 0.95),
        ("e", False, 0.60), ("f", False, 0.05), ("a", True, 0.30),     # a again, in a second repeat
    ]
    table = pd.DataFrame(rows, columns=["id", "truly_malignant", "probability"])
    table["called_malignant"] = table["probability"] >= 0.5
    return table


def test_false_negatives_lowest_first_false_positives_highest_first_each_image_once():
    found = confident_errors(reading(), n=4)
    assert found["false negatives"]["id"].tolist() == ["a", "b"]
    assert found["false negatives"]["probability"].tolist() == [0.10, 0.40]
    assert found["false positives"]["id"].tolist() == ["d", "e"]
    assert confident_errors(reading(), n=1)["false positives"]["id"].tolist() == ["d"]


def test_the_sheet_has_a_row_per_kind_of_error_and_shows_the_images_read():
    images = np.zeros((6, 32, 32), np.uint8)
    images[3] = 255                                   # d, the most confident false positive, is white
    sheet = errors_sheet({"dense": reading()}, images, list("abcdef"))
    assert sheet.shape[0] == 2 * (112 + 18) + 2
    false_positives = sheet[112 + 18 + 2:]
    assert false_positives[:112, 150:266].mean() > 200          # the first tile of that row is d
