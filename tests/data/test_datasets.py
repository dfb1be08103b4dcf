from pathlib import Path

import numpy as np
import pytest

from tests import miniatures
from tests.data.test_dicom import write_dicom
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data import datasets


def test_busi_masks_are_never_images_and_classes_are_selectable(tmp_path):
    counts = miniatures.make_busi(tmp_path)
    scan = datasets.scan("busi", tmp_path, busi_classes=("benign", "malignant"))
    assert len(scan.rows) == 12
    assert not any("_mask" in row["path"] for row in scan.rows)
    reasons = [i["reason"] for i in scan.ignored]
    assert reasons.count("segmentation mask") == 2 * (6 + 2)              # _mask and _mask_1 files
    assert sum("not in normalize.busi_classes" in r for r in reasons) == 6 + 8   # normal: images and masks
    assert reasons.count("not an image") == 1
    three = datasets.scan("busi", tmp_path, busi_classes=("benign", "malignant", "normal"))
    assert len(three.rows) == counts["images"]
    assert {row["label"] for row in three.rows} == {"benign", "malignant", "normal"}


def test_busi_empty_class_folder_is_an_error(tmp_path):
    miniatures.make_busi(tmp_path)
    for path in (tmp_path / "Dataset_BUSI_with_GT/malignant").iterdir():
        path.unlink()
    with pytest.raises(PipelineError, match="malignant holds no image"):
        datasets.scan("busi", tmp_path, busi_classes=("benign", "malignant"))


def test_rodrigues_finds_originals_anywhere(tmp_path):
    miniatures.make_rodrigues(tmp_path, benign=3, malignant=4)
    scan = datasets.scan("rodrigues", tmp_path)
    assert [r["label"] for r in scan.rows].count("benign") == 3 and len(scan.rows) == 7
    assert all(r["path"].endswith(".bmp") and r["case"] == "" for r in scan.rows)


def test_ddti_labels_from_tirads_grouped_by_case(tmp_path):
    miniatures.make_ddti(tmp_path)
    scan = datasets.scan("ddti", tmp_path)
    by_case = {}
    for row in scan.rows:
        by_case.setdefault(row["case"], set()).add(row["label"])
    assert all(len(labels) == 1 for labels in by_case.values())
    expected = {f"case{n}": datasets.DDTI_TIRADS[t] for n, t in miniatures.DDTI_CASES.items() if t}
    assert {case: labels.pop() for case, labels in by_case.items()} == expected
    reasons = {(i["path"], i["reason"]) for i in scan.ignored}
    assert ("7_1.jpg", "case has no TI-RADS") in reasons and ("7_2.jpg", "case has no TI-RADS") in reasons
    assert ("99_1.jpg", "no case file") in reasons


def test_ddti_missing_tirads_tag_is_excluded_unknown_value_is_an_error(tmp_path):
    miniatures.make_ddti(tmp_path, {1: None, 2: "3", 3: "4a"})
    assert {i["path"] for i in datasets.scan("ddti", tmp_path).ignored} >= {"1_1.jpg", "1_2.jpg"}
    (tmp_path / "2.xml").write_text(miniatures.ddti_xml(2, "6", 1))
    with pytest.raises(PipelineError, match=r"2.xml: TI-RADS '6' is not one of"):
        datasets.scan("ddti", tmp_path)


def test_ddti_refuses_entities(tmp_path):
    miniatures.make_ddti(tmp_path, {1: "2", 2: "5"})
    (tmp_path / "1.xml").write_text('<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x "3">]><case><tirads>&x;</tirads></case>')
    with pytest.raises(PipelineError, match="1.xml declares a DTD"):
        datasets.scan("ddti", tmp_path)


def test_ddti_refuses_a_dtd_hidden_between_processing_instructions(tmp_path):
    miniatures.make_ddti(tmp_path, {1: "2", 2: "5"})
    (tmp_path / "1.xml").write_text('<?x <!-- ?><!DOCTYPE case [<!ENTITY e "5">]><?x --> ?>'
                                    "<case><number>1</number><tirads>&e;</tirads></case>")
    with pytest.raises(PipelineError, match="1.xml declares a DTD"):
        datasets.scan("ddti", tmp_path)


def test_ddti_reads_a_case_whose_comment_only_mentions_a_doctype(tmp_path):
    miniatures.make_ddti(tmp_path, {1: "2", 2: "5"})
    text = (tmp_path / "1.xml").read_text().replace("<case>", "<!-- exported without <!DOCTYPE> --><case>")
    (tmp_path / "1.xml").write_text(text)
    assert {row["label"] for row in datasets.scan("ddti", tmp_path).rows} == {"benign", "malignant"}


def test_salivary_class_case_image_layout(tmp_path):
    miniatures.make_salivary(tmp_path, cases_per_class=2)
    scan = datasets.scan("salivary", tmp_path)
    assert len(scan.rows) == 16 and {r["case"] for r in scan.rows} == {"benign/caseb0", "benign/caseb1",
                                                                       "malignant/casem0", "malignant/casem1"}
    assert [i["reason"] for i in scan.ignored] == ["not an image or DICOM file"] * 4


def test_missing_raw_folder_names_the_stage(tmp_path):
    with pytest.raises(PipelineError, match="download@busi"):
        datasets.scan("busi", tmp_path / "nothing")


@pytest.mark.parametrize("path", ["../outside.png", "/etc/hosts", "a/../../outside.png", ""])
def test_labels_csv_paths_must_stay_inside_the_dataset_folder(tmp_path, path):
    raw = tmp_path / "salivary"
    (raw / "a").mkdir(parents=True)
    (raw / "a" / "ok.png").touch()
    (tmp_path / "outside.png").touch()
    (raw / "labels.csv").write_text(f"path,label,case\na/ok.png,benign,c1\n{path},malignant,c2\n")
    with pytest.raises(PipelineError, match=r"labels.csv, line 3: path .* points outside"):
        datasets.scan("salivary", raw)


def test_labels_csv_paths_inside_the_folder_are_kept(tmp_path):
    raw = tmp_path / "salivary"
    for folder in ("a", "b"):
        (raw / folder).mkdir(parents=True)
    (raw / "a" / "ok.png").touch()
    (raw / "a" / "two.png").touch()
    (raw / "labels.csv").write_text("path,label,case\nb/../a/ok.png,benign,c1\na/two.png,malignant,c2\n")
    assert datasets.scan("salivary", raw).rows[0] == {"path": "b/../a/ok.png", "label": "benign", "case": "c1",
                                                      "patient": "c1",
                                                      "listed_at": f"{raw / 'labels.csv'}, line 2"}


@pytest.mark.parametrize("rows, message", [
    ("a/1.png,benign,c1\na/2.png,malignant,c2\na/./1.png,benign,c3\n",
     r"labels.csv, line 4: 'a/1.png' is listed twice \(first at .*labels.csv, line 2\); keep one "
     r"row per image"),
    ("a/1.png,benign,c1\na/2.png,,c2\n", r"line 3: label '' is not a known class; every image needs one"),
    ("a/1.png,benign ,c1\na/2.png,malignant,c2\n", r"line 2: label 'benign ' .*remove the spaces: 'benign'"),
    ("a/1.png,Malignant,c1\na/2.png,benign,c2\n", r"line 2: label 'Malignant' .*use one of benign, malignant"),
    ("a/1.png,benign,c1\na/2.png,benign,c2\n", r"every image is labelled 'benign'; .* at least two classes"),
    ("a/1.png,benign,c1\na/2.png,normal,c2\n", r"line 3: label 'normal' is not a known class; use one of benign, malignant"),
])
def test_labels_csv_labels_are_refused_at_import_naming_the_line(tmp_path, rows, message):
    raw = tmp_path / "salivary"
    (raw / "a").mkdir(parents=True)
    for name in ("1.png", "2.png"):
        (raw / "a" / name).touch()
    (raw / "labels.csv").write_text("path,label,case\n" + rows)
    with pytest.raises(PipelineError, match=message):
        datasets.scan("salivary", raw)


def test_a_symlinked_image_or_case_folder_pointing_outside_the_dataset_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "case9").mkdir(parents=True)
    miniatures.write(outside / "case9" / "x.png", miniatures.phantom_pixels(1)[0])
    miniatures.make_salivary(tmp_path / "salivary")
    raw = tmp_path / "salivary"
    case_dir = next(p for p in (raw / "benign").iterdir() if p.is_dir())
    (case_dir / "linked.png").symlink_to(outside / "case9" / "x.png")
    with pytest.raises(PipelineError, match=r"linked.png: path .* points outside"):
        datasets.scan("salivary", raw)
    (case_dir / "linked.png").unlink()
    (raw / "benign" / "linked_case").symlink_to(outside / "case9", target_is_directory=True)
    with pytest.raises(PipelineError, match=r"linked_case/x.png: path .* points outside"):
        datasets.scan("salivary", raw)
    (raw / "benign" / "linked_case").unlink()
    assert datasets.scan("salivary", raw).rows      # and without the links it is accepted


@pytest.mark.parametrize("content", [b"", b'path,label,case\n"a/1.png,benign,c1\n', b"\xff\xfe\x00binary"])
def test_a_malformed_labels_csv_is_refused_naming_the_file(tmp_path, content):
    raw = tmp_path / "salivary"
    raw.mkdir()
    (raw / "labels.csv").write_bytes(content)
    with pytest.raises(PipelineError, match=r"labels.csv is not a readable CSV|labels.csv lists no images|lacks the column"):
        datasets.scan("salivary", raw)


def test_every_published_dataset_name_has_its_source_and_reader():
    from ultrasound_transfer.choices import DATASETS, PHANTOMS, PUBLISHED_DATASETS

    assert set(datasets.SOURCES) == set(PUBLISHED_DATASETS) and set(DATASETS) == set(PHANTOMS) | set(datasets.SOURCES)
    assert all(callable(getattr(datasets, f"scan_{name}", None)) for name in PUBLISHED_DATASETS)


# --- a dataset of one's own: download.<name>.layout folders or table -------------------------------------------


def make_clinic(raw: Path) -> Path:
    """A clinic's export in the folders layout: patient P1 with a benign and a malignant lesion (a frame two
    folders deep), a benign image of its own patient, P2's three-frame cine loop without a suffix (as a PACS
    names it), a DICOMDIR index and a note beside the images."""
    frames = miniatures.phantom_pixels(6, seed=5)
    miniatures.write(raw / "benign" / "P1" / "a.png", frames[0])
    miniatures.write(raw / "benign" / "P1" / "study" / "b.png", frames[1])
    miniatures.write(raw / "benign" / "solo.png", frames[2])
    miniatures.write(raw / "malignant" / "P1" / "c.png", frames[3])
    (raw / "malignant" / "P2").mkdir(parents=True)
    write_dicom(raw / "malignant" / "P2" / "IM000001", np.stack(miniatures.phantom_pixels(3, seed=9)), "MONOCHROME2")
    (raw / "malignant" / "P2" / "DICOMDIR").write_bytes(b"index")
    (raw / "benign" / "P1" / "notes.txt").write_text("seen 2026")
    return raw


def test_the_folders_layout_reads_patients_across_labels_and_a_cine_loop_as_one_case(tmp_path):
    raw = make_clinic(tmp_path / "clinic")
    scan = datasets.scan("clinic", raw, layout="folders")
    rows = {(row["path"], row.get("frame")): row for row in scan.rows}
    assert {key: (row["label"], row["patient"]) for key, row in rows.items() if key[0].endswith(".png")} == {
        ("benign/P1/a.png", None): ("benign", "P1"), ("benign/P1/study/b.png", None): ("benign", "P1"),
        ("benign/solo.png", None): ("benign", ""), ("malignant/P1/c.png", None): ("malignant", "P1")}
    loop = [rows[("malignant/P2/IM000001", k)] for k in (1, 2, 3)]
    assert {(row["patient"], row["case"]) for row in loop} == {("P2", "malignant/P2/IM000001")}
    assert {row["path"]: row["reason"] for row in scan.ignored} == {
        "benign/P1/notes.txt": "not an image or DICOM file", "malignant/P2/DICOMDIR": "a DICOMDIR index"}


def test_the_folders_layout_refuses_a_label_outside_the_classes_and_a_table_beside_it(tmp_path):
    raw = make_clinic(tmp_path / "clinic")
    (raw / "malignant").rename(raw / "Malignant")
    with pytest.raises(PipelineError, match=r"clinic/Malignant/P1/c.png: label 'Malignant' is not a known class; "
                                            r"use one of benign, malignant"):
        datasets.scan("clinic", raw, layout="folders")
    (raw / "Malignant").rename(raw / "malignant")
    (raw / "labels.csv").write_text("path,label,patient\n")
    with pytest.raises(PipelineError, match=r"labels.csv exists, but download.clinic.layout is folders.*layout: "
                                            r"table"):
        datasets.scan("clinic", raw, layout="folders")


def test_the_table_layout_reads_patients_cases_and_frames(tmp_path):
    raw = make_clinic(tmp_path / "clinic")
    (raw / "labels.csv").write_text("path,label,patient,case\nbenign/P1/a.png,benign,P1,left\n"
                                    "malignant/P1/c.png,malignant,P1,right\nmalignant/P2/IM000001,malignant,P2,\n")
    rows = datasets.scan("clinic", raw, layout="table").rows
    assert [(row["patient"], row["case"], row.get("frame"), row["listed_at"][-6:]) for row in rows] == [
        ("P1", "left", None, "line 2"), ("P1", "right", None, "line 3"), ("P2", "malignant/P2/IM000001", 1, "line 4"),
        ("P2", "malignant/P2/IM000001", 2, "line 4"), ("P2", "malignant/P2/IM000001", 3, "line 4")]


@pytest.mark.parametrize("table, message", [
    ("path,label,case\nbenign/P1/a.png,benign,c1\n", r"lacks the column\(s\) patient.*copy the case column into a "
                                                     r"patient column"),
    ("path,label,patient\nbenign/P1/a.png,benign,\n", r"labels.csv, line 2: no patient given"),
    ("path,label,patient\nbenign/P1/a.png,benign,P1\nmalignant/P1/c.png,malignant,P1 \n",
     r"labels.csv, line 3: patient 'P1 ' has spaces around it; remove them: 'P1'"),
    ("path,label,patient\nbenign/P1/a.png,benign,P1\nbenign/P9.png,malignant,P9\n",
     r"labels.csv, line 3: 'benign/P9.png' is no file in .*copy the image there or remove the line"),
    ("path,label,patient\nbenign/P1/a.png,benign,P1\nmalignant/P1/c.png,malign,P1\n",
     r"labels.csv, line 3: label 'malign' is not a known class"),
])
def test_the_table_layout_names_the_line_of_each_problem(tmp_path, table, message):
    raw = make_clinic(tmp_path / "clinic")
    (raw / "labels.csv").write_text(table)
    with pytest.raises(PipelineError, match=message):
        datasets.scan("clinic", raw, layout="table")


def test_an_undeclared_dataset_without_a_layout_is_refused_naming_the_declaration(tmp_path):
    raw = make_clinic(tmp_path / "clinic")
    with pytest.raises(PipelineError, match=r"download.clinic: \{layout: folders\} or \{layout: table\}"):
        datasets.scan("clinic", raw)


# --- breast datasets that publish patients: BUS-BRA and BrEaST --------------------------------------------------


def test_busbra_reads_patients_pathology_and_its_official_partition(tmp_path):
    miniatures.make_busbra(tmp_path, patients=12)
    scan = datasets.scan("busbra", tmp_path)
    assert len(scan.rows) == 18                    # six patients with two views, six with one
    two_views = [row for row in scan.rows if row["patient"] == "patient1"]
    assert [row["path"] for row in two_views] == ["BUSBRA/Images/bus_0001-l.png", "BUSBRA/Images/bus_0001-r.png"]
    assert {row["official_fold_5"] for row in two_views} == {1}
    assert {row["label"] for row in scan.rows} == {"benign", "malignant"}
    assert {item["reason"] for item in scan.ignored} == {"segmentation mask"} and len(scan.ignored) == 18


@pytest.mark.parametrize("edit, message", [
    (lambda root: (root / "bus_data.csv").write_text((root / "bus_data.csv").read_text(encoding="utf-8-sig")
                                                      .replace(",malignant,", ",Malignant,", 1)),
     r"bus_data.csv, line \d+: label 'Malignant' is not a known class"),
    (lambda root: (root / "Images" / "bus_0003-r.png").unlink(), r"bus_data.csv, line \d+: its image .*bus_0003-r.png "
                                                                  r"is missing"),
    (lambda root: (root / "5-fold-cv.csv").write_text("ID,Pathology,kFold\nbus_0001-l,benign,1\n"),
     r"5-fold-cv.csv has no row for bus_0001-r"),
])
def test_busbra_names_the_line_or_file_that_does_not_fit(tmp_path, edit, message):
    miniatures.make_busbra(tmp_path)
    edit(tmp_path / "BUSBRA")
    with pytest.raises(PipelineError, match=message):
        datasets.scan("busbra", tmp_path)


def test_breast_usg_reads_one_patient_per_scan_leaves_normal_and_masks_out(tmp_path):
    miniatures.make_breast_usg(tmp_path, cases=10)
    scan = datasets.scan("breast_usg", tmp_path)
    assert [row["patient"] for row in scan.rows] == [f"case{k}" for k in range(1, 10)]
    assert {row["label"] for row in scan.rows} == {"benign", "malignant"}
    reasons = [item["reason"] for item in scan.ignored]
    assert reasons.count("segmentation mask") == 11 and sum("normal scan" in r for r in reasons) == 1


def test_every_official_partition_has_its_reader():
    from ultrasound_transfer.choices import OFFICIAL_PARTITIONS

    assert {name: tuple(files) for name, files in datasets.OFFICIAL_PARTITIONS.items()} == OFFICIAL_PARTITIONS
