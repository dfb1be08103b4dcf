import json

import cv2
import numpy as np
import pandas as pd
import pytest

from stages import download, normalize
from tests import miniatures
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.imaging import letterbox

PARAMS = {"image_size": 40, "models": ["VGG16"],
          "normalize": {"busi_classes": ["benign", "malignant"], "on_undecodable": "error",
                        "near_duplicate_bits": 18, "near_duplicate_cross_label": "exclude"}}


def make_raw(project, files, dataset="toy"):
    """files: list of (relative path, label, case, pixels)."""
    raw = project / f"data/raw/{dataset}"
    for relative, _, _, pixels in files:
        miniatures.write(raw / relative, pixels)
    pd.DataFrame([f[:3] for f in files], columns=["path", "label", "case"]).to_csv(raw / "labels.csv", index=False)
    return raw


def prepared(project, dataset="toy"):
    out = project / f"data/prepared/{dataset}"
    manifest = pd.read_csv(out / "manifest.csv", dtype={"group": str, "case": str}, keep_default_na=False)
    return np.load(out / "images.npy"), manifest, json.loads((out / "report.json").read_text())


def test_manifest_array_and_groups(project):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (30, 60), dtype=np.uint8)
    b = rng.integers(0, 255, (50, 20), dtype=np.uint8)
    make_raw(project, [
        ("benign/a.png", "benign", "p1", a),
        ("benign/a_copy.bmp", "benign", "p2", a),      # same pixels, other case -> same group
        ("malignant/b.png", "malignant", "p3", b),
        ("malignant/c.jpg", "malignant", "p3", cv2.merge([b, b, b])),
    ])
    project.write_params(PARAMS)
    normalize.main(["toy"])
    images, manifest, report = prepared(project)
    assert images.shape == (4, 40, 40) and images.dtype == np.uint8
    assert {"id", "source", "label", "class_name", "group", "sha256"} <= set(manifest.columns)
    assert manifest["label"].tolist() == [0, 0, 1, 1]
    assert manifest["group"].tolist() == ["p1", "p1", "p3", "p3"]
    assert manifest["sha256"][0] == manifest["sha256"][1]
    assert (manifest["height"][2], manifest["width"][2]) == (50, 20)
    assert np.array_equal(images[0], letterbox(a, 40))
    assert report["classes"] == {"benign": 2, "malignant": 2} and report["exact_duplicate_sets"] == 1


def test_identical_pixels_under_two_labels_are_excluded_and_listed(project, capsys):
    frames = miniatures.phantom_pixels(4)
    make_raw(project, [
        ("benign/x.png", "benign", "p1", frames[0]),
        ("malignant/x_again.png", "malignant", "p2", frames[0]),
        ("benign/y.png", "benign", "p3", frames[1]),
        ("malignant/z.png", "malignant", "p4", frames[2]),
    ])
    project.write_params(PARAMS)
    normalize.main(["toy"])
    images, manifest, report = prepared(project)
    assert manifest["source"].tolist() == ["benign/y.png", "malignant/z.png"] and len(images) == 2
    assert report["conflicting_duplicates"][0]["files"] == ["benign/x.png", "malignant/x_again.png"]
    assert report["excluded_images"] == {"identical pixels under another label": 2}
    assert "excluded: identical pixels under another label" in capsys.readouterr().out


def test_undecodable_image_is_an_error_or_skipped_when_asked(project):
    frames = miniatures.phantom_pixels(3)
    raw = make_raw(project, [("benign/a.png", "benign", "p1", frames[0]),
                             ("malignant/b.png", "malignant", "p2", frames[1]),
                             ("malignant/c.png", "malignant", "p3", frames[2])])
    (raw / "malignant/c.png").write_bytes(b"garbage")
    project.write_params(PARAMS)
    with pytest.raises(PipelineError, match=r"c.png.*on_undecodable: skip"):
        normalize.main(["toy"])
    assert not (project / "data/prepared/toy").exists()
    assert not list((project / "data/prepared").glob(".*"))
    project.write_params({**PARAMS, "normalize": {**PARAMS["normalize"], "on_undecodable": "skip"}})
    normalize.main(["toy"])
    _, manifest, report = prepared(project)
    assert len(manifest) == 2
    assert report["excluded"] == [{"path": "malignant/c.png", "reason": "undecodable or degenerate image"}]


def test_missing_raw_folder_says_which_stage_to_run(project):
    project.write_params(PARAMS)
    with pytest.raises(PipelineError, match=r"data/raw/toy is missing.*download@toy"):
        normalize.main(["toy"])


def test_busi_miniature_end_to_end(project):
    miniatures.make_busi(project / "data/raw/busi")
    project.write_params(PARAMS)
    normalize.main(["busi"])
    images, manifest, report = prepared(project, "busi")
    # 6 benign + 6 malignant, minus the cross-class copy (benign (1) = malignant (1)).
    assert report["classes"] == {"benign": 5, "malignant": 5}
    assert report["ignored_files"] == {"segmentation mask": 16, "class 'normal' not in normalize.busi_classes": 14,
                                       "not an image": 1}
    assert not manifest["source"].str.contains("mask").any()
    assert manifest["group"].nunique() == len(manifest)        # BUSI has no patient ids


def test_busi_as_normal_and_benign_against_malignant(project):
    """BUSI's other published task (BreastMNIST's): normal images read as benign, two classes, the files kept
    traceable to their folder."""
    miniatures.make_busi(project / "data/raw/busi")
    project.write_params({**PARAMS, "normalize": {**PARAMS["normalize"], "busi_classes": ["benign", "malignant",
                                                                                          "normal"],
                                                  "busi_normal_as_benign": True}})
    normalize.main(["busi"])
    _, manifest, report = prepared(project, "busi")
    assert report["classes"] == {"benign": 11, "malignant": 5}      # 5 benign + 6 normal, against 5 malignant
    normal = manifest["source"].str.contains("normal/")
    assert normal.sum() == 6 and (manifest.loc[normal, "class_name"] == "benign").all()
    assert sorted(manifest["label"].unique()) == [0, 1]


def test_salivary_formats_and_groups(project):
    miniatures.make_salivary(project / "data/raw/salivary", cases_per_class=2)
    project.write_params(PARAMS)
    normalize.main(["salivary"])
    images, manifest, report = prepared(project, "salivary")
    assert len(manifest) == 16 and report["groups"] == 4
    # The 16-bit (b.png) and RGBA (c.png) copies of one frame decode to the same pixels.
    for _, rows in manifest.groupby("case"):
        hashes = dict(zip(rows["source"].str.split("/").str[-1], rows["sha256"]))
        assert hashes["b.png"] == hashes["c.png"] != hashes["a.png"]


def test_a_clinics_own_folders_give_patient_groups_and_a_cine_loop_frame_by_frame(project):
    from tests.data.test_datasets import make_clinic

    make_clinic(project / "data/raw/clinic")
    project.write_params({**PARAMS, "datasets": ["clinic"], "download": {"clinic": {"layout": "folders"}}})
    normalize.main(["clinic"])
    images, manifest, report = prepared(project, "clinic")
    assert report["classes"] == {"benign": 3, "malignant": 4}
    group = dict(zip(manifest["source"], manifest["group"]))
    # P1's benign and malignant images lie in one group, the loop's frames in another, the lone image alone.
    assert group["benign/P1/a.png"] == group["benign/P1/study/b.png"] == group["malignant/P1/c.png"] == "P1"
    assert {group[f"malignant/P2/IM000001#{k}"] for k in (1, 2, 3)} == {"P2"} and report["groups"] == 3
    loop = miniatures.phantom_pixels(3, seed=9)
    for k in (1, 2, 3):
        row = manifest.index[manifest["id"] == f"clinic/malignant/P2/IM000001#{k}"][0]
        assert np.array_equal(images[row], letterbox(loop[k - 1], 40))
    assert {item["path"] for item in report["ignored"]} == {"benign/P1/notes.txt", "malignant/P2/DICOMDIR"}


def near_copy_dataset(project):
    """Six patients; p2 holds a JPEG copy with text of p1's frame (same label), and p6
    (malignant) a cropped copy of p3's benign frame."""
    from tests.data.test_near_duplicates import crop_5_percent, jpeg, with_text

    frames = miniatures.phantom_pixels(8, seed=31)
    make_raw(project, [
        ("benign/p1.png", "benign", "p1", frames[0]),
        ("benign/p2.jpg", "benign", "p2", jpeg(with_text(frames[0]))),
        ("benign/p3.png", "benign", "p3", frames[1]),
        ("benign/p4.png", "benign", "p4", frames[2]),
        ("malignant/p5.png", "malignant", "p5", frames[5]),
        ("malignant/p6.png", "malignant", "p6", crop_5_percent(frames[1])),
        ("malignant/p7.png", "malignant", "p7", frames[6]),
        ("malignant/p8.png", "malignant", "p8", frames[7]),
    ])


def test_near_duplicates_join_groups_and_cross_label_pairs_are_excluded(project):
    near_copy_dataset(project)
    project.write_params(PARAMS)
    normalize.main(["toy"])
    _, manifest, report = prepared(project)
    group = dict(zip(manifest["source"], manifest["group"]))
    exact = dict(zip(manifest["source"], manifest["group_exact"]))
    assert group["benign/p1.png"] == group["benign/p2.jpg"] and exact["benign/p1.png"] != exact["benign/p2.jpg"]
    assert "benign/p3.png" not in group and "malignant/p6.png" not in group
    pair = report["cross_label_near_duplicates"][0]
    assert pair["files"] == ["benign/p3.png", "malignant/p6.png"] and pair["labels"] == ["benign", "malignant"]
    assert report["excluded_images"] == {"near-duplicate under another label": 2}
    assert report["near_duplicate_groups"] == 1 and report["near_duplicate_group_sizes"] == [2]
    sheet = cv2.imread(str(project / "data/prepared/toy/near_duplicates.png"), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None and sheet.shape[0] >= 96


def test_cross_label_near_duplicates_can_be_kept(project):
    near_copy_dataset(project)
    project.write_params({**PARAMS, "normalize": {**PARAMS["normalize"], "near_duplicate_cross_label": "keep"}})
    normalize.main(["toy"])
    _, manifest, report = prepared(project)
    assert len(manifest) == 8 and len(report["cross_label_near_duplicates"]) == 1
    group = dict(zip(manifest["source"], manifest["group"]))
    assert group["benign/p3.png"] == group["malignant/p6.png"]


def test_folds_never_split_near_duplicate_groups(project, monkeypatch):
    from stages import folds

    # Eight images are too few for the inner splits, which folds would refuse; this test is about the outer folds.
    monkeypatch.setattr(folds, "check_inner_splits", lambda *args: None)
    near_copy_dataset(project)
    project.write_params({**PARAMS, "seed": 0, "cv": {"n_splits": 2, "grouping": "near"}})
    normalize.main(["toy"])
    for seed in range(10):
        project.write_params({**PARAMS, "seed": seed, "cv": {"n_splits": 2, "grouping": "near"}})
        folds.main(["toy"])
        record = json.loads((project / "data/folds/toy.json").read_text())
        test_of = {i: k for k, f in enumerate(record["folds"]) for i in f["test_indices"]}
        assert test_of[0] == test_of[1]      # p1 and its near-copy p2


@pytest.mark.parametrize("resize, visible_warns", [("letterbox", True), ("crop", False), ("stretch", False)])
def test_the_audit_shows_what_each_resize_leaves_visible_of_a_planted_size_shortcut(project, resize, visible_warns):
    """Malignant phantom images saved 25 % wider: the file betrays the class under every resize; only the
    letterbox lets it into the network's input, as padding."""
    project.write_params({"download": {"phantom": {"count": 80, "native_size": 64, "size_shortcut": 1.0}},
                          "normalize": {"resize": resize}})
    download.main(["phantom"])
    normalize.main(["phantom"])
    audit = json.loads((project / "data/prepared/phantom/report.json").read_text())["shortcut_audit"]
    assert audit["models"]["all_features"]["roc_auc"] > 0.95
    assert (audit["models"]["visible_features"]["roc_auc"] >= 0.7) == visible_warns
    assert audit["models"]["size_presets"]["roc_auc"] > 0.95       # two sizes, as two scanner presets would be
    assert len(audit["warnings"]) == 2 + visible_warns


def test_coloured_calipers_planted_on_malignant_images_are_flagged_where_the_bright_share_misses_them(project):
    """Yellow calipers turn to gray 226 in a gray frame: under the bright share's 250, so only the colour share
    sees them, and the audit warns."""
    frames = miniatures.phantom_pixels(48, seed=21)
    files = []
    for i, gray in enumerate(frames):
        malignant = i >= 24
        picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
        if malignant:
            for x in (20, 44):
                cv2.drawMarker(picture, (x, 24), (0, 255, 255), cv2.MARKER_CROSS, 9, 1)    # BGR yellow
        label = "malignant" if malignant else "benign"
        files.append((f"{label}/{i:02d}.png", label, f"p{i // 2}", picture))
    make_raw(project, files, dataset="phantom")
    project.write_params(PARAMS)
    normalize.main(["phantom"])
    _, manifest, report = prepared(project, dataset="phantom")
    audit = report["shortcut_audit"]
    assert manifest.loc[manifest["class_name"] == "benign", "colour_share"].max() == 0
    assert manifest.loc[manifest["class_name"] == "malignant", "colour_share"].min() > 0
    assert audit["features"]["colour_share"] == 1.0 and audit["features"]["bright_share"] < 0.8
    assert any("colour_share AUC 1.00" in warning for warning in audit["warnings"])
