import cv2
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ultrasound_transfer.data.phantom import generate, patient_labels
from ultrasound_transfer.settings import PhantomSettings


def test_same_spec_gives_identical_images():
    a = generate(PhantomSettings(count=6, native_size=64))
    b = generate(PhantomSettings(count=6, native_size=64))
    assert all(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b))
    c = generate(PhantomSettings(count=6, native_size=64, seed=8))
    assert not np.array_equal(a[0].pixels, c[0].pixels)


def test_images_are_landscape_uint8_with_texture():
    image = generate(PhantomSettings(count=1, native_size=80))[0].pixels
    assert image.dtype == np.uint8 and image.shape == (60, 80)
    assert 40 < image.mean() < 200 and image.std() > 15


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.7])
def test_class_balance_follows_malignant_fraction(fraction):
    images = generate(PhantomSettings(count=80, images_per_patient=2, malignant_fraction=fraction, native_size=40))
    share = np.mean([im.label == "malignant" for im in images])
    assert share == pytest.approx(fraction, abs=1 / 40)
    assert patient_labels(40, fraction, 7).count("malignant") == round(40 * fraction)


def test_images_of_one_patient_share_label_and_differ_in_pixels():
    images = generate(PhantomSettings(count=12, images_per_patient=3, native_size=48))
    patients = {}
    for im in images:
        patients.setdefault(im.patient, []).append(im)
    assert len(patients) == 4 and all(len(v) == 3 for v in patients.values())
    for views in patients.values():
        assert len({v.label for v in views}) == 1
        assert not np.array_equal(views[0].pixels, views[1].pixels)


def grouped_cv_accuracy(difficulty: float) -> float:
    """Accuracy of a plain pixel-based classifier under patient-grouped CV."""
    images = generate(PhantomSettings(count=160, difficulty=difficulty, native_size=96))
    x = np.array([cv2.resize(im.pixels, (24, 18), interpolation=cv2.INTER_AREA).ravel() for im in images], float)
    y = np.array([im.label == "malignant" for im in images])
    groups = [im.patient for im in images]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    return cross_val_score(model, x, y, groups=groups, cv=GroupKFold(4)).mean()


def test_difficulty_moves_separability_from_perfect_to_chance():
    easy, default, impossible = (grouped_cv_accuracy(d) for d in (0.0, PhantomSettings().difficulty, 1.0))
    assert easy >= 0.95
    assert 0.7 <= default <= 0.97
    assert impossible <= 0.7
    assert easy > default > impossible


def test_near_copies_are_new_patients_and_near_duplicates_of_their_source():
    from ultrasound_transfer.data.near_duplicates import fingerprints, near_pairs

    images = generate(PhantomSettings(count=20, images_per_patient=2, native_size=128, near_copies=3))
    assert len(images) == 23
    copies = images[20:]
    assert [c.patient for c in copies] == ["D0001", "D0002", "D0003"]
    prints = np.stack([fingerprints(im.pixels) for im in images])
    pairs, _ = near_pairs(prints, 18)
    linked = {int(j) for i, j in pairs if j >= 20}
    assert linked == {20, 21, 22}
    for i, j in pairs:
        assert images[i].label == images[j].label


def test_a_second_site_changes_the_scanner_not_the_lesions():
    """Same seed and lesions, another site: brighter (gain), coarser speckle, a header burned in, a smaller lesion."""
    base = PhantomSettings(count=8, native_size=96, images_per_patient=2)
    site = PhantomSettings(**{**base.__dict__, "gain_db": 3.0, "speckle_scale": 1.4, "overlay": "text"})
    here, there = generate(base), generate(site)
    assert [im.label for im in here] == [im.label for im in there]
    assert np.mean([b.pixels.mean() - a.pixels.mean() for a, b in zip(here, there)]) > 5

    def grain(pixels):   # correlation of neighbouring pixels along x: larger speckle, higher correlation
        x = pixels[20:60, 10:-10].astype(float)
        return np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1]
    assert np.mean([grain(b.pixels) - grain(a.pixels) for a, b in zip(here, there)]) > 0.03
    header = lambda im: (im.pixels[:10] == 255).mean()   # noqa: E731
    assert min(header(im) for im in there) > 0.01 and max(header(im) for im in here) < 0.005


def test_planted_shortcuts_mark_malignant_patients_only_and_change_nothing_at_zero():
    base = PhantomSettings(count=24, native_size=64, images_per_patient=2)
    planted = generate(PhantomSettings(**{**base.__dict__, "size_shortcut": 1.0, "caliper_shortcut": 1.0}))
    for plain, marked in zip(generate(base), planted):
        if plain.label == "benign":
            assert np.array_equal(plain.pixels, marked.pixels)
        else:
            assert marked.pixels.shape == (48, 80) and plain.pixels.shape == (48, 64)
            assert (marked.pixels == 255).sum() >= (plain.pixels == 255).sum() + 10     # two caliper crosses
