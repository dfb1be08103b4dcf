import cv2
import numpy as np
import pytest

from ultrasound_transfer.data.grouping import merge_groups
from ultrasound_transfer.data.near_duplicates import N_VARIANTS, fingerprints, near_pairs
from ultrasound_transfer.data.phantom import generate
from ultrasound_transfer.settings import PhantomSettings

THRESHOLD = 18   # the params.yaml default


def frames(n, seed=4, malignant_fraction=0.5):
    spec = PhantomSettings(count=n, images_per_patient=1, native_size=128, seed=seed, malignant_fraction=malignant_fraction)
    return [im.pixels for im in generate(spec)]


def with_text(g):
    g = g.copy()
    cv2.putText(g, "L BREAST 12MHz 3.5cm", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 255, 1)
    return g


def with_caliper(g):
    g = g.copy()
    cy, cx = g.shape[0] // 2, g.shape[1] // 2
    cv2.line(g, (cx - 6, cy), (cx + 6, cy), 255, 1)
    cv2.line(g, (cx, cy - 6), (cx, cy + 6), 255, 1)
    return g


def crop_5_percent(g):
    h, w = g.shape
    return g[round(0.05 * h):, round(0.05 * w):]


def crop_uneven(g):
    """About 5 % trimmed, unevenly from three sides: off the crops fingerprinted."""
    h, w = g.shape
    return g[round(0.03 * h): h - round(0.02 * h), round(0.04 * w):]


def brighter(g):
    return np.clip(g.astype(float) * 1.2 + 5, 0, 255).astype(np.uint8)


def jpeg(g):
    return cv2.imdecode(cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_GRAYSCALE)


COPIES = {"text": with_text, "caliper": with_caliper, "crop": crop_5_percent, "crop_uneven": crop_uneven,
          "gain": brighter, "jpeg": jpeg}


def test_copies_with_overlays_crops_gain_and_jpeg_are_grouped():
    originals = frames(6)
    images, cases = [], []
    for k, original in enumerate(originals):
        for name, make in {"original": lambda g: g, **COPIES}.items():
            images.append(make(original))
            cases.append(f"case{k}-{name}")      # every copy filed as its own case
    prints = np.stack([fingerprints(g) for g in images])
    pairs, _ = near_pairs(prints, THRESHOLD)
    groups = merge_groups(cases, [str(i) for i in range(len(cases))], pairs)
    per_original = len(COPIES) + 1
    for k in range(len(originals)):
        assert len(set(groups[k * per_original:(k + 1) * per_original])) == 1, f"copies of frame {k} split"
    assert len(set(groups)) == len(originals)


def test_different_images_of_one_class_are_not_grouped():
    benign = frames(40, seed=12, malignant_fraction=0.0)
    prints = np.stack([fingerprints(g) for g in benign])
    pairs, distances = near_pairs(prints, THRESHOLD)
    assert len(pairs) == 0, distances


def test_groups_are_transitive():
    # A chain of ever larger crops: each link is close, the ends may not be.
    base = frames(1, seed=21)[0]
    chain = [base]
    for _ in range(4):
        chain.append(crop_5_percent(chain[-1]))
    prints = np.stack([fingerprints(g) for g in chain])
    pairs, _ = near_pairs(prints, THRESHOLD)
    assert len(set(merge_groups([f"c{i}" for i in range(5)], [str(i) for i in range(5)], pairs))) == 1
    assert merge_groups(list("abcd"), list("wxyz"), [(0, 1), (2, 1)]) == ["a", "a", "a", "d"]


def test_near_pairs_equal_brute_force():
    rng = np.random.default_rng(0)
    prints = rng.integers(0, 2**63, (60, N_VARIANTS, 2), dtype=np.uint64)
    prints[7] = prints[3]
    prints[8, 4] = prints[30, 0] ^ np.uint64(0b1011)      # a crop of 8 is 3 + 3 bits from 30
    pairs, distances = near_pairs(prints, 20, block=16)

    def bits(x):
        return bin(int(x)).count("1")

    expected = {}
    for i in range(60):
        for j in range(i + 1, 60):
            d = min(min(bits(prints[a, k, 0] ^ prints[b, 0, 0]) + bits(prints[a, k, 1] ^ prints[b, 0, 1])
                        for k in range(N_VARIANTS)) for a, b in ((i, j), (j, i)))
            if d <= 20:
                expected[(i, j)] = d
    assert {(int(i), int(j)): int(d) for (i, j), d in zip(pairs, distances)} == expected
    assert expected[(3, 7)] == 0 and expected[(8, 30)] == 6


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    pairs, distances = near_pairs(np.zeros((n, N_VARIANTS, 2), np.uint64), THRESHOLD)
    assert pairs.shape == (0, 2) and len(distances) == 0
