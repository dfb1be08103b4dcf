"""Miniature copies of each real dataset's official layout, made from phantom images."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ultrasound_transfer.data.phantom import generate
from ultrasound_transfer.settings import PhantomSettings


def phantom_pixels(n: int, seed: int = 3) -> list[np.ndarray]:
    """``n`` distinct ultrasound-like gray frames (n/2 benign-looking, then malignant-looking)."""
    return [im.pixels for im in generate(PhantomSettings(count=n, images_per_patient=1, native_size=64, seed=seed))]


def write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise RuntimeError(f"could not write {path}")
    return path


def make_busi(raw: Path, per_class: int = 6) -> dict:
    """BUSI: masks beside images (some with _mask_1), RGB-stored gray, a stray file, and a
    cross-class exact duplicate (malignant (1) repeats benign (1))."""
    root = raw / "Dataset_BUSI_with_GT"
    frames = phantom_pixels(3 * per_class)
    k = 0
    for label in ("benign", "malignant", "normal"):
        for i in range(1, per_class + 1):
            pixels = frames[k]
            k += 1
            if label == "malignant" and i == 1:
                pixels = frames[0]
            write(root / label / f"{label} ({i}).png", cv2.merge([pixels] * 3))
            write(root / label / f"{label} ({i})_mask.png", (pixels > 128).astype(np.uint8) * 255)
            if i % 3 == 0:
                write(root / label / f"{label} ({i})_mask_1.png", (pixels > 100).astype(np.uint8) * 255)
    (root / "benign" / "Thumbs.db").write_bytes(b"\0junk")
    return {"images": 3 * per_class, "masks": 3 * per_class + 3 * (per_class // 3)}


def make_rodrigues(raw: Path, benign: int = 5, malignant: int = 7) -> None:
    """Rodrigues: BMP crops of varying size under originals/<class>/ inside an extracted folder."""
    frames = phantom_pixels(benign + malignant, seed=5)
    root = raw / "Breast Ultrasound Image" / "originals"
    for i in range(benign + malignant):
        label = "benign" if i < benign else "malignant"
        crop = frames[i][: 30 + i, : 40 + 2 * i]
        write(root / label / f"{label[0]}{i:03d}.bmp", crop)


DDTI_CASES = {1: "2", 2: "3", 3: "4a", 4: "4b", 5: "4c", 6: "5", 7: "", 8: "3", 9: "4a", 10: "2", 11: "5", 12: "4b",
              13: "3", 14: "4c"}


def ddti_xml(number: int, tirads: str | None, images: int) -> str:
    marks = "".join(f"<mark><image>{k}</image><svg>[]</svg></mark>" for k in range(1, images + 1))
    tirads_tag = "" if tirads is None else f"<tirads>{tirads}</tirads>"
    return (f'<?xml version="1.0" encoding="UTF-8"?><case><number>{number}</number><age>50</age>'
            f"<sex>F</sex>{tirads_tag}<reportbacaf></reportbacaf>{marks}</case>")


def make_ddti(raw: Path, cases: dict[int, str | None] = DDTI_CASES) -> None:
    """DDTI: flat N.xml + N_K.jpg, every TI-RADS value, an empty one, 1-2 images per case,
    and an image without a case file."""
    frames = phantom_pixels(2 * len(cases) + 1, seed=9)
    raw.mkdir(parents=True, exist_ok=True)
    for n, tirads in cases.items():
        images = 1 + n % 2
        (raw / f"{n}.xml").write_text(ddti_xml(n, tirads, images))
        for k in range(1, images + 1):
            write(raw / f"{n}_{k}.jpg", frames[2 * n - 2 + k - 1])
    write(raw / "99_1.jpg", frames[-1])


def make_salivary(raw: Path, cases_per_class: int = 4) -> None:
    """Salivary: <class>/<case>/<image>, with PNG, 16-bit PNG, RGBA and JPEG files."""
    frames = phantom_pixels(4 * cases_per_class, seed=11)
    k = 0
    for label in ("benign", "malignant"):
        for c in range(cases_per_class):
            case = raw / label / f"case{label[0]}{c}"
            write(case / "a.png", frames[k])
            write(case / "b.png", (frames[k + 1].astype(np.uint16) * 257))
            write(case / "c.png", cv2.merge([frames[k + 1]] * 3 + [np.full_like(frames[k], 255)]))
            write(case / "d.jpg", frames[k])
            k += 2
            (case / "notes.txt").write_text("report")


def zip_folder(folder: Path) -> bytes:
    """A zip archive (bytes) of everything below ``folder``, paths relative to it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def make_busbra(raw: Path, patients: int = 12) -> None:
    """BUS-BRA: ``BUSBRA/bus_data.csv``, ``Images/bus_NNNN-<side>.png``, masks, and the official 5-fold partition
    (its test fold per image, patients kept apart); odd patients have two views (left and right)."""
    root = raw / "BUSBRA"
    frames = phantom_pixels(2 * patients, seed=13)
    data, folds = ["ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"], ["ID,Pathology,kFold"]
    k = 0
    for patient in range(1, patients + 1):
        pathology = "benign" if patient <= patients // 2 else "malignant"
        # Each class's patients dealt round the five folds, so every test fold holds both classes.
        fold = (patient - 1 - (0 if pathology == "benign" else patients // 2)) % 5 + 1
        for side in ("l", "r") if patient % 2 else ("s",):
            image_id = f"bus_{patient:04d}-{side}"
            write(root / "Images" / f"{image_id}.png", frames[k])
            write(root / "Masks" / f"mask_{patient:04d}-{side}.png", (frames[k] > 128).astype(np.uint8) * 255)
            k += 1
            data.append(f'{image_id},{patient},x,{pathology},4,GE Logiq 7,64,48,left,"[1,2,3,4]"')
            folds.append(f"{image_id},{pathology},{fold}")
    (root / "bus_data.csv").write_text("\n".join(data) + "\n", encoding="utf-8-sig")
    (root / "5-fold-cv.csv").write_text("\n".join(folds) + "\n")


def make_breast_usg(raw: Path, cases: int = 10) -> None:
    """BrEaST: a flat folder of ``caseNNN.png`` with ``_tumor`` and ``_other1`` masks, and the clinical table as
    .xlsx; the last case is a normal scan."""
    import pandas as pd

    folder = raw / "BrEaST-Lesions_USG-images_and_masks"
    frames = phantom_pixels(cases, seed=17)
    rows = []
    for case in range(1, cases + 1):
        name = f"case{case:03d}"
        write(folder / f"{name}.png", frames[case - 1])
        write(folder / f"{name}_tumor.png", (frames[case - 1] > 128).astype(np.uint8) * 255)
        classification = "normal" if case == cases else "benign" if case % 2 else "malignant"
        rows.append({"CaseID": case, "Image_filename": f"{name}.png", "Mask_tumor_filename": f"{name}_tumor.png",
                     "BIRADS": "4a", "Verification": "confirmed by biopsy", "Classification": classification})
    write(folder / "case001_other1.png", frames[0])
    pd.DataFrame(rows).to_excel(raw / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx", index=False)
