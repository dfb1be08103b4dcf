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
salivary       ``<class>/<case>/<image>`` assembled by the user, or ``labels.csv``
=============  ===================================================================
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ultrasound_transfer.choices import PHANTOMS
from ultrasound_transfer.common import PipelineError
from ultrasound_transfer.data.imaging import IMAGE_SUFFIXES


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
    "salivary": Source(
        None,
        None,
        None,
        "salivary gland cases from ultrasoundcases.info (head and neck), assembled by hand as "
        "data/raw/salivary/<class>/<case>/<image> or listed in data/raw/salivary/labels.csv (path,label,case); "
        "see docs/datasets.md",
    ),
}

# The classes a label may name; normal only in BUSI, and only beside benign and malignant.
KNOWN_CLASSES = ("benign", "malignant", "normal")

DDTI_TIRADS = {"2": "benign", "3": "benign", "4a": "malignant", "4b": "malignant", "4c": "malignant", "5": "malignant"}
BUSI_MASK = re.compile(r"_mask(_\d+)?\.png$", re.IGNORECASE)


@dataclass
class Scan:
    """What a raw folder holds: usable images and everything left out."""

    rows: list[dict] = field(default_factory=list)        # path, label, case (path relative to the raw folder)
    ignored: list[dict] = field(default_factory=list)     # path, reason

    def add(self, raw: Path, path: Path, label: str, case: str) -> None:
        self.rows.append({"path": path.relative_to(raw).as_posix(), "label": label, "case": case})

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


def scan_manifest(raw: Path) -> Scan:
    """A ``labels.csv`` listing ``path,label,case`` (phantom, or a hand-made list)."""
    import pandas as pd

    try:
        table = pd.read_csv(raw / "labels.csv", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PipelineError(f"{raw / 'labels.csv'} is not a readable CSV ({str(error).strip()}); it must be UTF-8 "
                            "text with the header path,label,case and one row per image.") from None
    missing = {"path", "label", "case"} - set(table.columns)
    if missing:
        raise PipelineError(f"{raw / 'labels.csv'} lacks columns {sorted(missing)}; expected path,label,case.")
    scan = Scan(rows=table[["path", "label", "case"]].to_dict("records"))
    if not scan.rows:
        raise PipelineError(f"{raw / 'labels.csv'} lists no images.")
    for line, row in enumerate(scan.rows, start=2):
        check_inside(raw, row["path"], f"{raw / 'labels.csv'}, line {line}")
    return scan


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


def scan_salivary(raw: Path) -> Scan:
    """Salivary glands: ``labels.csv``, or ``<class>/<case>/<image>`` folders."""
    if (raw / "labels.csv").exists():
        return scan_manifest(raw)
    scan = Scan()
    for class_dir in sorted(p for p in raw.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        case_dirs = sorted(p for p in class_dir.iterdir() if p.is_dir())
        if not case_dirs:
            raise PipelineError(f"salivary: {class_dir} holds no case folders; expected <class>/<case>/<image>.")
        for case_dir in case_dirs:
            for path in sorted(p for p in case_dir.rglob("*") if p.is_file()):
                (scan.add(raw, path, class_dir.name, f"{class_dir.name}/{case_dir.name}") if is_image(path)
                 else scan.ignore(raw, path, "not an image"))
    if not scan.rows:
        raise PipelineError(f"{raw}: no images found; expected <class>/<case>/<image> folders or labels.csv.")
    return scan


def check_scan(raw: Path, found: Scan, *, from_labels_csv: bool, known: tuple[str, ...] = ("benign", "malignant")) -> Scan:
    """Refuse, before any work, what would leak past DVC or corrupt the labels.

    Every image must resolve inside ``raw`` (a symbolic link, or a file in a
    linked folder, pointing elsewhere would be read without DVC tracking it);
    no image may be listed twice; every label must be one of the ``known``
    classes, written exactly (no blank, no padding); and two classes must be
    benign and malignant (malignant is the positive class of every metric).
    ``labels.csv`` problems name the line.  An empty scan is left to the
    caller, which says why each file was left out.
    """
    first_line: dict[str, int] = {}
    for number, row in enumerate(found.rows, start=2):
        where = f"{raw / 'labels.csv'}, line {number}" if from_labels_csv else f"{raw / row['path']}"
        check_inside(raw, row["path"], where)
        key = str((raw / row["path"]).resolve())
        if key in first_line:
            first = f"line {first_line[key]}" if from_labels_csv else "another entry"
            raise PipelineError(f"{where}: {row['path']!r} is listed twice (first on {first}); keep one row per image.")
        first_line[key] = number
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


def scan(dataset: str, raw: Path, *, busi_classes: tuple[str, ...] = ("benign", "malignant"),
         busi_normal_as_benign: bool = False) -> Scan:
    """Scan the raw folder of ``dataset`` in its official layout (``busi_classes``: the BUSI classes used;
    ``busi_normal_as_benign``: normal read as benign), checked by :func:`check_scan`."""
    from_labels_csv = dataset not in ("busi", "rodrigues", "ddti") and (raw / "labels.csv").exists()
    known = KNOWN_CLASSES if dataset == "busi" else ("benign", "malignant")
    found = scan_layout(dataset, raw, busi_classes=busi_classes)
    if dataset == "busi" and busi_normal_as_benign:
        found.rows = [{**row, "label": "benign" if row["label"] == "normal" else row["label"]} for row in found.rows]
    return check_scan(raw, found, from_labels_csv=from_labels_csv, known=known)


def scan_layout(dataset: str, raw: Path, *, busi_classes: tuple[str, ...]) -> Scan:
    """The images of ``dataset``'s raw folder as its layout lists them."""
    if not raw.is_dir() or not any(raw.iterdir()):
        raise PipelineError(f"raw data folder {raw} is missing or empty; run 'dvc repro download@{dataset}' first.")
    if dataset == "busi":
        return scan_busi(raw, list(busi_classes))
    if dataset == "rodrigues":
        return scan_rodrigues(raw)
    if dataset == "ddti":
        return scan_ddti(raw)
    if dataset == "salivary":
        return scan_salivary(raw)
    if (raw / "labels.csv").exists():
        return scan_manifest(raw)
    raise PipelineError(f"{raw}: no labels.csv and '{dataset}' has no layout of its own; add labels.csv (path,label,case).")
