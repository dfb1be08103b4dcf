"""The datasets the pipeline knows: where they come from and how their files are laid out.

Each real dataset is read in the layout in which it is officially published.
A *scan* of a raw folder returns the images to use (path, label, case) and
every file left out with the reason, so that ``normalize`` can report both.

=============  ===================================================================
dataset        layout under ``data/raw/<dataset>/``
=============  ===================================================================
phantom        ``labels.csv`` (``path,label,case``) + images (generated)
phantom_site_b the same, generated as another site's scanner would show it
busi           ``Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (N).png``
               with masks ``<class> (N)_mask.png``, ``_mask_1.png`` beside them
rodrigues      ``originals/{benign,malignant}/*.bmp`` (anywhere below the folder)
ddti           flat folder of case files ``N.xml`` and images ``N_K.jpg``
busbra         ``BUSBRA/bus_data.csv`` (``ID,Case,Histology,Pathology,BIRADS,...``),
               ``BUSBRA/Images/<ID>.png``, ``Masks/``, the official partitions
               ``5-fold-cv.csv`` and ``10-fold-cv.csv`` (``ID,Pathology,kFold,...``)
breast_usg     ``BrEaST-Lesions_USG-images_and_masks/caseNNN.png`` with masks
               ``caseNNN_tumor.png``, ``caseNNN_other1.png``, and the clinical table
               ``BrEaST-Lesions-USG-clinical-data-*.xlsx`` (``CaseID,Image_filename,
               ...,Classification``)
salivary       ``<class>/<case>/<image>`` assembled by the user, or ``labels.csv``
               (``path,label,case``): the two layouts below, a case standing for a patient
(your own)     ``download.<name>.layout``: ``folders``, ``<label>/<patient>/<image>``
               (images at any depth below the patient) or ``<label>/<image>`` (one
               patient per image); ``table``, ``labels.csv`` with ``path,label,patient``
               and an optional ``case``
=============  ===================================================================

A dataset of one's own (:func:`scan_folders`, :func:`scan_table`) may hold
PNG, BMP, JPEG and DICOM files, recognised by content as ``predict`` does
(:mod:`ultrasound_transfer.data.frames`); a multi-frame DICOM file (a cine
loop) is one case of several images, one per frame.  Its patients are the
groups no split divides: every image of a patient, under whichever label,
lies on one side of every split.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.frames import file_kind, frame_count
from ultrasound_transfer.data.imaging import IMAGE_SUFFIXES
from ultrasound_transfer.choices import OFFICIAL_FOLD_COLUMN


@dataclass(frozen=True)
class Source:
    """Where a dataset's archive comes from (None: the user places it by hand)."""

    archive: str | None           # file name under data/raw/_downloads/
    url: str | None
    sha256: str | None
    how_to_get: str               # told to the user when it cannot be fetched


SOURCES: dict[str, Source] = {
    "busi": Source(
        "Dataset_BUSI.zip",
        "https://scholar.cu.edu.eg/Dataset_BUSI.zip",
        "b2ce09f6063a31a73f628b6a6ee1245187cbaec225e93e563735691d68654de7",
        "BUSI (Al-Dhabyani et al., Data in Brief 28, 2020) from https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
    ),
    "rodrigues": Source(
        "rodrigues.zip",
        "https://data.mendeley.com/public-files/datasets/wmy84gzngw/files/"
        "b63daee9-78de-4122-8475-9b3aa22ffd64/file_downloaded",
        None,
        "the 'Download All' archive of https://data.mendeley.com/datasets/wmy84gzngw/1 (Rodrigues, "
        "Breast Ultrasound Image, Mendeley Data, doi 10.17632/wmy84gzngw.1)",
    ),
    "ddti": Source(
        "ddti.zip",
        None,
        None,
        "the DDTI thyroid images (Pedraza et al., SPIE 9287, 2015), e.g. the Kaggle copy "
        "'ddti-thyroid-ultrasound-images': a flat folder of N.xml and N_K.jpg files",
    ),
    "busbra": Source(
        "BUSBRA.zip",
        "https://zenodo.org/api/records/8231412/files/BUSBRA.zip/content",
        None,
        "BUS-BRA (Gomez-Flores et al., Medical Physics 51(4), 2024) from Zenodo, doi 10.5281/zenodo.8231412: "
        "BUSBRA.zip, unpacked to data/raw/busbra/BUSBRA/",
    ),
    "breast_usg": Source(
        None,
        None,
        None,
        "BrEaST (Pawlowska et al., Scientific Data 11:148, 2024) from The Cancer Imaging Archive, collection "
        "Breast-Lesions-USG (doi 10.7937/9WKK-Q141): unpack BrEaST-Lesions_USG-images_and_masks-Dec-15-2023.zip into "
        "data/raw/breast_usg/ and put BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx beside it",
    ),
    "salivary": Source(
        None,
        None,
        None,
        "salivary gland cases from ultrasoundcases.info (head and neck), assembled by hand as "
        "data/raw/salivary/<class>/<case>/<image> or listed in data/raw/salivary/labels.csv (path,label,case); "
        "see docs/datasets.md",
    ),
}

LAYOUT_HOW_TO = {
    "folders": "data/raw/{name}/<label>/<patient>/<image> (or <label>/<image>, one patient per image), the labels "
               "being benign and malignant",
    "table": "data/raw/{name}/labels.csv (path,label,patient and optionally case) beside the images it lists",
}


def own_source(name: str, layout: str, url: str | None) -> Source:
    """The source of a dataset of one's own: placed by hand in its ``layout``, or fetched as a zip from ``url``."""
    return Source(f"{name}.zip" if url else None, url, None,
                  f"your images as {LAYOUT_HOW_TO[layout].format(name=name)} (docs/datasets.md)")


# The classes a label may name; normal only in BUSI, and only beside benign and malignant.
KNOWN_CLASSES = ("benign", "malignant", "normal")

DDTI_TIRADS = {"2": "benign", "3": "benign", "4a": "malignant", "4b": "malignant", "4c": "malignant", "5": "malignant"}
BUSI_MASK = re.compile(r"_mask(_\d+)?\.png$", re.IGNORECASE)


@dataclass
class Scan:
    """What a raw folder holds: usable images and everything left out."""

    # path (relative to the raw folder), label, case; where the dataset says so, patient (the group) and frame
    # (1, 2, ... of a multi-frame file)
    rows: list[dict] = field(default_factory=list)
    ignored: list[dict] = field(default_factory=list)     # path, reason

    def add(self, raw: Path, path: Path, label: str, case: str) -> None:
        self.rows.append({"path": path.relative_to(raw).as_posix(), "label": label, "case": case})

    def add_file(self, raw: Path, path: Path, label: str, *, patient: str, case: str = "",
                 listed_at: str | None = None, extra: dict | None = None) -> None:
        """An image or DICOM file of ``patient`` (its group; "" for a patient of one image), listed at
        ``listed_at`` (a table's file and line) where given.  Each frame of a multi-frame file is an image,
        and the file's frames are one case (``case``, or the file); otherwise the case is ``case``, or the
        patient.  ``extra``: columns the dataset publishes beside (its official folds)."""
        relative = path.relative_to(raw).as_posix()
        where = ({"listed_at": listed_at} if listed_at is not None else {}) | (extra or {})
        frames = frame_count(path)
        if frames == 1:
            self.rows.append({"path": relative, "label": label, "case": case or patient, "patient": patient, **where})
            return
        for frame in range(1, frames + 1):
            self.rows.append({"path": relative, "label": label, "case": case or relative, "patient": patient,
                              "frame": frame, **where})

    def ignore(self, raw: Path, path: Path, reason: str) -> None:
        self.ignored.append({"path": path.relative_to(raw).as_posix(), "reason": reason})


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def find_folder(raw: Path, name: str) -> Path | None:
    """``raw/name`` or the shallowest folder called ``name`` below ``raw``."""
    if (raw / name).is_dir():
        return raw / name
    matches = sorted((p for p in raw.rglob(name) if p.is_dir()), key=lambda p: len(p.parts))
    return matches[0] if matches else None


def class_files(folder: Path, label: str, where: str) -> list[Path]:
    """Files of one class folder, which must exist and hold at least one image."""
    if not folder.is_dir():
        raise PipelineError(f"{where}: class folder {folder} is missing; is the dataset complete?")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not any(is_image(p) for p in files):
        raise PipelineError(f"{where}: class folder {folder} holds no image; is the dataset complete?")
    return files


def check_inside(raw: Path, relative: str, where: str) -> None:
    """Fail unless ``relative`` names a file inside ``raw``: DVC tracks that folder and nothing outside it."""
    if not relative or Path(relative).is_absolute() or not (raw / relative).resolve().is_relative_to(raw.resolve()):
        raise PipelineError(
            f"{where}: path {relative!r} points outside {raw}; list images by their path inside that folder "
            "(copy them in first), so that DVC tracks what the experiment reads."
        )


def scan_busi(raw: Path, classes: list[str]) -> Scan:
    """BUSI: images beside their masks; a mask is never taken for an image.

    BUSI gives no patient identifiers, so each image is its own case (identical
    pixels are still grouped by ``normalize``).
    """
    root = find_folder(raw, "Dataset_BUSI_with_GT")
    if root is None:
        raise PipelineError(f"{raw}: no Dataset_BUSI_with_GT folder; unzip Dataset_BUSI.zip there.")
    scan = Scan()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in classes:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    scan.ignore(raw, path, f"class '{folder.name}' not in normalize.busi_classes")
    for label in classes:
        for path in class_files(root / label, label, "busi"):
            if BUSI_MASK.search(path.name):
                scan.ignore(raw, path, "segmentation mask")
            elif is_image(path):
                scan.add(raw, path, label, "")
            else:
                scan.ignore(raw, path, "not an image")
    return scan


def scan_rodrigues(raw: Path) -> Scan:
    """Rodrigues: ``originals/benign`` and ``originals/malignant`` BMP crops; no patient ids."""
    root = find_folder(raw, "originals")
    if root is None:
        raise PipelineError(f"{raw}: no 'originals' folder; unzip the Mendeley archive there.")
    scan = Scan()
    for label in ("benign", "malignant"):
        for path in class_files(root / label, label, "rodrigues"):
            (scan.add(raw, path, label, "") if is_image(path) else scan.ignore(raw, path, "not an image"))
    return scan


# BUS-BRA's image ids: bus_<patient, 4 digits>-<l, r or s: the lesion's side, or a single view>.
BUSBRA_ID = re.compile(r"^bus_(\d{4})-[lrs]$")
# The official patient-level partitions each dataset publishes, by number of folds (cv.folds: official).
OFFICIAL_PARTITIONS = {"busbra": {5: "5-fold-cv.csv", 10: "10-fold-cv.csv"}}


def shallowest_file(raw: Path, pattern: str) -> Path | None:
    """The file matching ``pattern`` nearest ``raw``'s top, or None."""
    found = sorted((p for p in raw.rglob(pattern) if p.is_file()), key=lambda p: (len(p.parts), p.name))
    return found[0] if found else None


def read_partition(path: Path) -> dict[str, int]:
    """An official partition file (``ID,...,kFold``): each image id's test fold."""
    table = read_csv_text(path)
    if not {"ID", "kFold"} <= set(table.columns):
        raise PipelineError(f"{path} lacks the columns ID and kFold of BUS-BRA's partitions; replace it with the "
                            "file from BUSBRA.zip.")
    try:
        return {row["ID"].strip(): int(float(row["kFold"])) for row in table.to_dict("records")}
    except ValueError:
        raise PipelineError(f"{path}: a kFold value is not a fold number; replace it with the file from "
                            "BUSBRA.zip.") from None


def read_csv_text(path: Path, *, fix: str = "replace it with the published file") -> "pd.DataFrame":
    """A CSV as text columns (blank cells empty, a leading byte-order mark dropped), or a refusal naming it and
    the ``fix``."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PipelineError(f"{path} is not a readable CSV ({str(error).strip()}); {fix}.") from None


def scan_busbra(raw: Path) -> Scan:
    """BUS-BRA (Gomez-Flores et al., Medical Physics 51(4), 2024): 1,875 biopsy-proven images of 1,064 patients.

    ``bus_data.csv`` gives each image's ``ID``, its patient (``Case``) and its
    ``Pathology`` (benign or malignant); the image is ``Images/<ID>.png``.  The
    patients are the groups.  The official patient-level partitions
    (``5-fold-cv.csv``, ``10-fold-cv.csv``: each image's test fold ``kFold``)
    are kept per image, for ``cv.folds: official``.
    """
    table_path = shallowest_file(raw, "bus_data.csv")
    if table_path is None:
        raise PipelineError(f"{raw}: no bus_data.csv; unzip BUSBRA.zip there (BUSBRA/bus_data.csv, BUSBRA/Images/).")
    root = table_path.parent
    table = read_csv_text(table_path)
    missing = {"ID", "Case", "Pathology"} - set(table.columns)
    if missing:
        raise PipelineError(f"{table_path} lacks the column(s) {', '.join(sorted(missing))}; replace it with the "
                            "file from BUSBRA.zip.")
    partitions = {folds: read_partition(root / name) for folds, name in OFFICIAL_PARTITIONS["busbra"].items()
                  if (root / name).is_file()}
    scan, listed = Scan(), set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        where, image_id = f"{table_path}, line {line}", row["ID"].strip()
        if not BUSBRA_ID.match(image_id):
            raise PipelineError(f"{where}: ID {image_id!r} is not of BUS-BRA's form bus_NNNN-l (r, s); replace the "
                                "file with the one from BUSBRA.zip.")
        image = root / "Images" / f"{image_id}.png"
        if not image.is_file():
            raise PipelineError(f"{where}: its image {image} is missing; is the dataset complete?")
        folds = {}
        for n_splits, fold_of in partitions.items():
            if image_id not in fold_of:
                raise PipelineError(f"{root / OFFICIAL_PARTITIONS['busbra'][n_splits]} has no row for {image_id} "
                                    f"(listed on line {line} of {table_path.name}); replace it with the file from "
                                    "BUSBRA.zip.")
            folds[OFFICIAL_FOLD_COLUMN.format(n_splits)] = fold_of[image_id]
        listed.add(image)
        scan.add_file(raw, image, row["Pathology"].strip(), patient=f"patient{row['Case'].strip()}", listed_at=where,
                      extra=folds)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in listed):
        if path.parent.name == "Masks":
            scan.ignore(raw, path, "segmentation mask")
        elif is_image(path):
            scan.ignore(raw, path, "not listed in bus_data.csv")
        elif path != table_path and path.name not in OFFICIAL_PARTITIONS["busbra"].values():
            scan.ignore(raw, path, "not an image")
    return scan


BREAST_USG_MASK = re.compile(r"_(tumor|other\d*)\.png$", re.IGNORECASE)


def scan_breast_usg(raw: Path) -> Scan:
    """BrEaST (Pawlowska et al., Scientific Data 11:148, 2024): one scan per patient, 154 benign, 98 malignant and
    4 normal, with the clinical table (``CaseID``, ``Image_filename``, ``Classification``, BI-RADS, how the
    diagnosis was verified ...).

    The patient is ``CaseID`` (one image each).  Normal scans show no lesion
    and are left out and counted (benign against malignant); masks are never
    taken for images.
    """
    import pandas as pd

    table_path = shallowest_file(raw, "BrEaST-Lesions*clinical*.xlsx")
    if table_path is None:
        raise PipelineError(f"{raw}: no BrEaST-Lesions-USG clinical data .xlsx; put the collection's clinical table "
                            "(BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx) beside the images.")
    try:
        table = pd.read_excel(table_path, dtype=str, keep_default_na=False)
    except Exception as error:  # noqa: BLE001 - openpyxl's own errors, re-raised naming the file
        raise PipelineError(f"{table_path} is not a readable .xlsx ({type(error).__name__}: {error}); download it "
                            "again from the collection's page.") from None
    missing = {"CaseID", "Image_filename", "Classification"} - set(table.columns)
    if missing:
        raise PipelineError(f"{table_path} lacks the column(s) {', '.join(sorted(missing))}; download it again.")
    images = {p.name: p for p in raw.rglob("*.png") if not BREAST_USG_MASK.search(p.name)}
    scan, listed = Scan(), set()
    for line, row in enumerate(table.to_dict("records"), start=2):
        name, label = row["Image_filename"].strip(), row["Classification"].strip()
        if not name:
            continue
        where = f"{table_path}, row {line}"
        if name not in images:
            raise PipelineError(f"{where}: its image {name} is not under {raw}; unpack the images and masks there.")
        listed.add(images[name])
        if label == "normal":
            scan.ignore(raw, images[name], "normal scan (no lesion): the study is benign against malignant")
            continue
        scan.add_file(raw, images[name], label, patient=f"case{row['CaseID'].strip()}", listed_at=where)
    for path in sorted(p for p in raw.rglob("*") if p.is_file() and p not in listed and p != table_path):
        scan.ignore(raw, path, "segmentation mask" if BREAST_USG_MASK.search(path.name) else
                    "not listed in the clinical table" if is_image(path) else "not an image")
    return scan


def declares_dtd(text: str) -> bool:
    """Whether the XML parser meets a DOCTYPE or an entity declaration (a comment that mentions one is no such
    declaration); malformed XML is left to the caller's parse, which names the error."""
    from xml.parsers import expat

    class Declared(Exception):
        pass

    def refuse(*_):
        raise Declared

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(text, True)
    except Declared:
        return True
    except expat.ExpatError:
        return False
    return False


def read_ddti_case(path: Path) -> tuple[str, str]:
    """(case number, TI-RADS text) of a DDTI case file, parsed without DTDs or entities."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if declares_dtd(text):
        raise PipelineError(f"{path} declares a DTD or entities, which DDTI files never do; refusing to parse it.")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise PipelineError(f"{path} is not well-formed XML ({error}); replace the file.") from error
    number = (root.findtext("number") or path.stem).strip()
    return number, (root.findtext("tirads") or "").strip()


def scan_ddti(raw: Path) -> Scan:
    """DDTI: label from the case's TI-RADS (2-3 benign, 4a-5 malignant); group = case.

    Cases with an empty or missing TI-RADS are left out and counted; any other
    value is an error, since guessing a label would change the experiment.
    """
    cases = sorted(raw.rglob("*.xml"))
    if not cases:
        raise PipelineError(f"{raw}: no DDTI case files (N.xml); place the DDTI folder there.")
    scan = Scan()
    used = set()
    for case_file in cases:
        number, tirads = read_ddti_case(case_file)
        images = sorted(p for p in case_file.parent.glob(f"{case_file.stem}_*") if is_image(p))
        used.update(images)
        if not tirads:
            for path in images:
                scan.ignore(raw, path, "case has no TI-RADS")
            continue
        label = DDTI_TIRADS.get(tirads.lower())
        if label is None:
            raise PipelineError(
                f"{case_file}: TI-RADS {tirads!r} is not one of {', '.join(DDTI_TIRADS)} (or empty); "
                "fix the file or remove the case."
            )
        for path in images:
            scan.add(raw, path, label, f"case{number}")
    for path in sorted(p for p in raw.rglob("*") if p.is_file() and p.suffix != ".xml" and p not in used):
        scan.ignore(raw, path, "no case file" if is_image(path) else "not an image")
    return scan


def visible_children(folder: Path) -> list[Path]:
    """A folder's entries in sorted order, without hidden ones and those starting with ``_`` (a system's or a
    tool's own, such as ``.DS_Store`` or ``__MACOSX``)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_")))


def scan_folders(raw: Path, *, dataset: str, patients_per_label: bool = False) -> Scan:
    """``<label>/<patient>/<image>`` (images at any depth below the patient's folder) or ``<label>/<image>`` (a
    file directly in a label's folder is a patient of its own).

    A patient's folder name is the patient: the same name under two labels is
    one patient, whose images all lie on one side of every split, unless
    ``patients_per_label`` (the salivary cases, numbered within a class).
    Files that are no image or DICOM file, and DICOMDIR indexes, are left out
    and listed.
    """
    if (raw / "labels.csv").exists():
        raise PipelineError(f"{raw / 'labels.csv'} exists, but download.{dataset}.layout is folders, which reads the "
                            "labels from the folder names; set layout: table to read the table, or remove the file.")
    scan = Scan()
    for entry in visible_children(raw):
        if entry.is_file():
            scan.ignore(raw, entry, "not in a label's folder")
            continue
        label = entry.name
        for item in visible_children(entry):
            files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
            patient = (f"{label}/{item.name}" if patients_per_label else item.name) if item.is_dir() else ""
            for path in files:
                kind = file_kind(path)
                if kind == "scan":
                    scan.add_file(raw, path, label, patient=patient)
                else:
                    scan.ignore(raw, path, "a DICOMDIR index" if kind == "dicomdir" else "not an image or DICOM file")
    if not scan.rows:
        raise PipelineError(f"{raw}: no image or DICOM file found; expected <label>/<patient>/<image> or "
                            "<label>/<image>, the labels being benign and malignant.")
    return scan


def scan_table(raw: Path, *, patient_column: str = "patient") -> Scan:
    """``labels.csv`` with ``path,label,patient`` and an optional ``case``: one row per image or DICOM file.

    ``patient_column``: the column whose value is the group (``case`` for the
    salivary and phantom tables, where a case is a patient).  Each path must
    exist inside the folder and each patient be given; a problem names the
    line.  Without a ``case`` column a patient's images are one case.
    """
    table = read_csv_text(raw / "labels.csv", fix="it must be UTF-8 text with a header line and one row per image")
    required = {"path", "label", patient_column}
    missing = required - set(table.columns)
    if missing:
        hint = (" Patients are what no split divides; if each case is a different patient, copy the case column "
                "into a patient column." if missing == {"patient"} and "case" in table.columns else "")
        header = "path,label,case" if patient_column == "case" else "path,label,patient (and optionally case)"
        raise PipelineError(f"{raw / 'labels.csv'} lacks the column(s) {', '.join(sorted(missing))}; its header "
                            f"must name {header}.{hint}")
    if table.empty:
        raise PipelineError(f"{raw / 'labels.csv'} lists no images.")
    scan = Scan()
    has_case = "case" in table.columns and patient_column != "case"
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{raw / 'labels.csv'}, line {line}"
        check_inside(raw, row["path"], where)
        if not (raw / row["path"]).is_file():
            raise PipelineError(f"{where}: {row['path']!r} is no file in {raw}; copy the image there or remove the "
                                "line.")
        if not row[patient_column].strip():
            raise PipelineError(f"{where}: no {patient_column} given; every image needs one (an image of a patient "
                                "seen once may take any id not used for another patient).")
        for column in (patient_column, "case") if has_case else (patient_column,):
            if row[column] != row[column].strip():
                # 'P1 ' and 'P1' would be two patients, whose images could then lie on both sides of a split.
                raise PipelineError(f"{where}: {column} {row[column]!r} has spaces around it; remove them: "
                                    f"{row[column].strip()!r}.")
        scan.add_file(raw, raw / row["path"], row["label"], patient=row[patient_column],
                      case=row["case"] if has_case else "", listed_at=where)
    return scan


def scan_salivary(raw: Path) -> Scan:
    """Salivary glands: ``labels.csv`` (``path,label,case``, a case being a patient), or ``<class>/<case>/<image>``
    folders (cases numbered within their class): the two layouts of a dataset of one's own."""
    if (raw / "labels.csv").exists():
        return scan_table(raw, patient_column="case")
    return scan_folders(raw, dataset="salivary", patients_per_label=True)


def check_scan(raw: Path, found: Scan, *, known: tuple[str, ...] = ("benign", "malignant")) -> Scan:
    """Refuse, before any work, what would leak past DVC or corrupt the labels.

    Every image must resolve inside ``raw`` (a symbolic link, or a file in a
    linked folder, pointing elsewhere would be read without DVC tracking it);
    no image may be listed twice; every label must be one of the ``known``
    classes, written exactly (no blank, no padding); and two classes must be
    benign and malignant (malignant is the positive class of every metric).
    A problem names the table's line (a row's ``listed_at``) or the file.
    An empty scan is left to the caller, which says why each file was left out.
    """
    first_seen: dict[tuple[str, int], str] = {}
    for row in found.rows:
        where = row.get("listed_at") or f"{raw / row['path']}"
        check_inside(raw, row["path"], where)
        key = (str((raw / row["path"]).resolve()), row.get("frame", 0))
        if key in first_seen:
            raise PipelineError(f"{where}: {row['path']!r} is listed twice (first {first_seen[key]}); keep one row "
                                "per image.")
        first_seen[key] = f"at {row['listed_at']}" if "listed_at" in row else "as another entry"
        label = row["label"]
        if label not in known:
            hint = (f"remove the spaces: {label.strip()!r}" if label.strip() in known else
                    "every image needs one" if not label.strip() else f"use one of {', '.join(known)}")
            raise PipelineError(f"{where}: label {label!r} is not a known class; {hint}.")
    classes = sorted({row["label"] for row in found.rows})
    if len(classes) == 1:
        raise PipelineError(f"{raw}: every image is labelled {classes[0]!r}; a classifier needs images of at least "
                            "two classes (benign and malignant).")
    if len(classes) == 2 and classes != ["benign", "malignant"]:
        raise PipelineError(f"{raw}: the two classes are {classes[0]!r} and {classes[1]!r}; two classes must be "
                            "benign and malignant, malignant being the positive class of every metric.")
    return found


def scan(dataset: str, raw: Path, *, layout: str | None = None, busi_classes: tuple[str, ...] = ("benign", "malignant"),
         busi_normal_as_benign: bool = False) -> Scan:
    """Scan the raw folder of ``dataset`` in its official layout, or a dataset of one's own in its ``layout``
    (``folders`` or ``table``), checked by :func:`check_scan` (``busi_classes``: the BUSI classes used;
    ``busi_normal_as_benign``: normal read as benign)."""
    known = KNOWN_CLASSES if dataset == "busi" else ("benign", "malignant")
    found = scan_layout(dataset, raw, layout=layout, busi_classes=busi_classes)
    if dataset == "busi" and busi_normal_as_benign:
        found.rows = [{**row, "label": "benign" if row["label"] == "normal" else row["label"]} for row in found.rows]
    return check_scan(raw, found, known=known)


def scan_layout(dataset: str, raw: Path, *, layout: str | None, busi_classes: tuple[str, ...]) -> Scan:
    """The images of ``dataset``'s raw folder as its layout lists them."""
    if not raw.is_dir() or not any(raw.iterdir()):
        raise PipelineError(f"raw data folder {raw} is missing or empty; run 'dvc repro download@{dataset}' first.")
    if layout == "folders":
        return scan_folders(raw, dataset=dataset)
    if layout == "table":
        return scan_table(raw)
    if dataset == "busi":
        return scan_busi(raw, list(busi_classes))
    if dataset == "rodrigues":
        return scan_rodrigues(raw)
    if dataset == "ddti":
        return scan_ddti(raw)
    if dataset == "busbra":
        return scan_busbra(raw)
    if dataset == "breast_usg":
        return scan_breast_usg(raw)
    if dataset == "salivary":
        return scan_salivary(raw)
    if (raw / "labels.csv").exists():           # a built-in phantom, generated with its table
        return scan_table(raw, patient_column="case")
    raise PipelineError(f"{raw}: '{dataset}' is not a built-in dataset and has no layout; declare it in params.yaml "
                        f"as download.{dataset}: {{layout: folders}} or {{layout: table}} (docs/datasets.md).")
