"""A deterministic generator of B-mode-like breast ultrasound images.

The built-in dataset ``phantom`` lets the whole pipeline run offline.  Each
simulated patient has one lesion, seen in several images (different probe
position, gain and speckle), so that cross-validation has real groups to keep
together.  The image model follows the textbook picture of breast sonography
(BI-RADS lexicon):

* tissue: skin line, subcutaneous fat, fibroglandular layer and chest-wall
  muscle, as horizontal bands of different echogenicity with gentle undulation;
* speckle: fully developed speckle, i.e. complex Gaussian scatterers weighted
  by the echogenicity, blurred by an anisotropic point-spread function, taken
  as envelope and log-compressed to 8 bits;
* benign lesion: oval, wider than tall, circumscribed smooth margin,
  homogeneous, posterior acoustic enhancement;
* malignant lesion: irregular or spiculated margin, taller than wide,
  heterogeneous interior, posterior acoustic shadowing, microcalcifications.

``near_copies`` extra images are annotated copies (calipers, text, a slight
uneven crop, another gain) of randomly chosen images, filed under new patient
ids, as public datasets hold them: only near-duplicate grouping keeps such a
copy in the fold of its original.

A *site* is the scanner and the habits of the people who saved the images:
``gain_db``, ``speckle_scale`` (the point-spread width, so the speckle's
grain), ``depth`` (a deeper setting shows a smaller lesion and more tissue),
``native_size`` and a burned-in ``overlay`` on every frame (``text``: a
header line; ``ruler``: depth ticks at the right edge).  The built-in
``phantom_site_b`` is the same lesion model seen through another site, so
that external validation (:mod:`ultrasound_transfer.evaluation.external_validation`)
runs offline.  Two *planted shortcuts* tie something that is not the lesion
to the label, for the shortcut audit (:mod:`ultrasound_transfer.evaluation.shortcuts`)
and its tests: ``size_shortcut`` is the share of malignant patients whose
images are saved 25 % wider (the aspect ratio, and under letterboxing the
padding, then betray the class), ``caliper_shortcut`` the share whose images
carry calipers at the lesion (as suspicious lesions are measured).  Both are
0 by default.

``difficulty`` in [0, 1] controls how much the two classes overlap.  Every
lesion feature is drawn at a "malignancy level" t in [0, 1] and rendered by
interpolating between the benign and the malignant look.  For a benign
patient t ~ U(0, difficulty), for a malignant one t ~ U(1 - difficulty, 1),
independently per feature.  At 0 the classes are cleanly separated, at 1 they
are indistinguishable; the default (0.6) leaves a good model well above chance
but short of 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ultrasound_transfer.settings import PhantomSettings

CLASS_NAMES = ("benign", "malignant")

# Look of each feature at t = 0 (benign) and t = 1 (malignant).
ASPECT_RANGE = (1.7, 0.75)          # width / height of the lesion
IRREGULARITY_RANGE = (0.0, 0.22)    # amplitude of low-order margin harmonics
SPICULE_RANGE = (0.0, 0.45)         # length of spicules, relative to the radius
HETEROGENEITY_RANGE = (0.04, 0.55)  # std of the interior echogenicity texture
POSTERIOR_RANGE = (0.7, -0.7)       # +enhancement ... -shadowing below the lesion
MARGIN_SOFTNESS_RANGE = (0.8, 3.0)  # blur of the lesion edge, in pixels
CALCIFICATION_MAX = 9               # microcalcifications at t = 1 (none below t = 0.5)


@dataclass(frozen=True)
class Lesion:
    """The lesion of one patient, shared by all of that patient's images."""

    radius: float            # mean radius relative to image width
    aspect: float
    irregularity: float
    harmonic_phases: tuple[float, ...]
    spicule_length: float
    spicule_angles: tuple[float, ...]
    heterogeneity: float
    posterior: float
    margin_softness: float
    calcifications: tuple[tuple[float, float], ...]  # (radius fraction, angle)


@dataclass(frozen=True)
class PhantomImage:
    """One generated image and its bookkeeping."""

    pixels: np.ndarray  # uint8, (height, width)
    label: str
    patient: str
    index: int          # image number within the patient, from 1


def _lerp(bounds: tuple[float, float], t: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * t


def draw_malignancy_levels(rng: np.random.Generator, malignant: bool, difficulty: float, n: int) -> np.ndarray:
    """Draw ``n`` independent per-feature malignancy levels t in [0, 1]."""
    u = rng.uniform(0.0, difficulty, size=n)
    return 1.0 - u if malignant else u


def draw_lesion(rng: np.random.Generator, malignant: bool, difficulty: float) -> Lesion:
    """Draw the lesion of one patient."""
    t = draw_malignancy_levels(rng, malignant, difficulty, 7)
    n_spicules = int(rng.integers(5, 11))
    n_calc = int(round(max(0.0, 2 * t[6] - 1) * CALCIFICATION_MAX))
    return Lesion(
        radius=float(rng.uniform(0.13, 0.20)),
        aspect=_lerp(ASPECT_RANGE, t[0]),
        irregularity=_lerp(IRREGULARITY_RANGE, t[1]),
        harmonic_phases=tuple(rng.uniform(0, 2 * np.pi, size=6)),
        spicule_length=_lerp(SPICULE_RANGE, t[2]),
        spicule_angles=tuple(rng.uniform(0, 2 * np.pi, size=n_spicules)),
        heterogeneity=_lerp(HETEROGENEITY_RANGE, t[3]),
        posterior=_lerp(POSTERIOR_RANGE, t[4]),
        margin_softness=_lerp(MARGIN_SOFTNESS_RANGE, t[5]),
        calcifications=tuple(
            (float(rng.uniform(0.1, 0.8)), float(rng.uniform(0, 2 * np.pi))) for _ in range(n_calc)
        ),
    )


def lesion_radius(lesion: Lesion, theta: np.ndarray, scale: float) -> np.ndarray:
    """Radius of the lesion boundary (pixels) at polar angles ``theta``."""
    a = scale * np.sqrt(lesion.aspect)   # horizontal semi-axis
    b = scale / np.sqrt(lesion.aspect)   # vertical semi-axis
    r = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    wobble = sum(
        np.cos(k * theta + phase) / k for k, phase in zip(range(2, 8), lesion.harmonic_phases)
    )
    r = r * (1 + lesion.irregularity * wobble)
    for angle in lesion.spicule_angles:
        d = np.angle(np.exp(1j * (theta - angle)))  # wrapped angular distance
        r = r * (1 + lesion.spicule_length * np.exp(-(d / 0.06) ** 2))
    return r


def tissue_echogenicity(rng: np.random.Generator, height: int, width: int, depth: float = 1.0) -> np.ndarray:
    """Echogenicity of the layered background tissue, in [0, 1]; ``depth`` > 1 shows more of it below."""
    y = np.arange(height)[:, None] / height * depth
    x = np.arange(width)[None, :] / width
    phase = rng.uniform(0, 2 * np.pi)
    undulation = 0.02 * np.sin(2 * np.pi * (1.3 * x) + phase)
    skin = 0.05 + rng.uniform(-0.01, 0.01)
    fat = 0.30 + rng.uniform(-0.04, 0.04) + undulation
    muscle = 0.85 + rng.uniform(-0.04, 0.02) + undulation
    e = np.where(y < skin, 0.95, 0.0)
    e = e + np.where((y >= skin) & (y < fat), 0.35, 0.0)
    e = e + np.where((y >= fat) & (y < muscle), 0.62, 0.0)
    striation = 0.15 * np.sin(2 * np.pi * 40 * y + 3 * x)
    e = e + np.where(y >= muscle, 0.55 + striation, 0.0)
    # Fibroglandular tissue is patchy, not flat.
    patches = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), width / 25)
    patches /= patches.std() + 1e-9
    e = e + np.where((y >= fat) & (y < muscle), 0.08 * patches, 0.0)
    return np.clip(e, 0.02, 1.0)


def render_lesion(
    rng: np.random.Generator, echo: np.ndarray, lesion: Lesion, *, center: tuple[float, float], scale: float,
    rotation: float,
) -> np.ndarray:
    """Draw the lesion, its posterior effect and calcifications into ``echo``."""
    height, width = echo.shape
    cy, cx = center
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx) - rotation
    dist = np.hypot(dx, dy)
    boundary = lesion_radius(lesion, theta, scale)
    inside = 1.0 / (1.0 + np.exp((dist - boundary) / lesion.margin_softness))

    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width)), (0, 0), 2.0)
    texture /= texture.std() + 1e-9
    interior = np.clip(0.10 + lesion.heterogeneity * 0.35 * texture, 0.02, 0.6)
    echo = echo * (1 - inside) + interior * inside

    # Posterior effect: a band below the lesion, as wide as the lesion, fading with depth.
    columns = inside.max(axis=0)
    bottom = np.argmax(np.cumsum(inside, axis=0) >= inside.sum(axis=0) - 0.5, axis=0)
    below = (yy > bottom[None, :]).astype(float)
    fade = np.exp(-(yy - bottom[None, :]).clip(0) / (0.6 * height))
    effect = cv2.GaussianBlur(columns[None, :] * below * fade, (0, 0), 1.5)
    echo = echo * (1 + lesion.posterior * effect)

    for frac, angle in lesion.calcifications:
        r = frac * float(lesion_radius(lesion, np.array([angle]), scale)[0])
        py, px = int(round(cy + r * np.sin(angle + rotation))), int(round(cx + r * np.cos(angle + rotation)))
        if 0 <= py < height and 0 <= px < width:
            cv2.circle(echo, (px, py), 1, 1.6, -1)
    return echo


def speckle_image(rng: np.random.Generator, echo: np.ndarray, gain_db: float, dynamic_range_db: float = 40.0,
                  speckle_scale: float = 1.0) -> np.ndarray:
    """Turn an echogenicity map into a log-compressed 8-bit B-mode image with speckle."""
    height, width = echo.shape
    scatter = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) * echo
    # Lateral resolution is coarser than axial: a wider blur along x.
    sigma_x, sigma_y = 1.8 * speckle_scale, 0.9 * speckle_scale
    real = cv2.GaussianBlur(scatter.real, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    imag = cv2.GaussianBlur(scatter.imag, (0, 0), sigmaX=sigma_x, sigmaY=sigma_y)
    envelope = np.hypot(real, imag)
    db = 20 * np.log10(envelope / (np.median(envelope) + 1e-12) + 1e-6) + gain_db
    pixels = (db + dynamic_range_db * 0.45) / dynamic_range_db * 255
    return np.clip(pixels, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class View:
    """One rendered view and where its lesion lies (for calipers)."""

    pixels: np.ndarray
    center: tuple[float, float]     # (y, x), px
    half_width: float               # the lesion's horizontal semi-axis, px


def render_image(rng: np.random.Generator, lesion: Lesion, height: int, width: int, *,
                 site: PhantomSettings = PhantomSettings(), lesion_width: int | None = None) -> View:
    """One view of ``lesion`` at ``site``: new probe position, size, tilt, gain and speckle.

    ``lesion_width`` is the frame width the lesion's size refers to (the
    site's usual one, when a frame is saved wider).
    """
    echo = tissue_echogenicity(rng, height, width, depth=site.depth)
    center = (rng.uniform(0.40, 0.58) * height, rng.uniform(0.35, 0.65) * width)
    scale = lesion.radius * (lesion_width or width) * rng.uniform(0.9, 1.1) / site.depth
    rotation = rng.uniform(-0.15, 0.15)
    echo = render_lesion(rng, echo, lesion, center=center, scale=scale, rotation=rotation)
    pixels = speckle_image(rng, echo, gain_db=rng.uniform(-3, 3) + site.gain_db, speckle_scale=site.speckle_scale)
    return View(burn_overlay(pixels, site.overlay), center, scale * np.sqrt(lesion.aspect))


def burn_overlay(pixels: np.ndarray, style: str) -> np.ndarray:
    """The site's burned-in annotation, drawn in white as scanners do: none, a text header, or depth ticks."""
    if style == "none":
        return pixels
    out = pixels.copy()
    height, width = out.shape
    if style == "text":
        text = np.zeros_like(out)
        cv2.putText(text, "SITE B 7.5MHz", (2, max(10, height // 10)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.35, width / 350), 255, 1)
        out[text >= 128] = 255      # crisp, as burned-in text is (OpenCV 5 draws text antialiased)
    else:
        for y in range(height // 8, height, height // 8):
            cv2.line(out, (width - 1 - max(2, width // 40), y), (width - 1, y), 255, 1)
    return out


def draw_calipers(pixels: np.ndarray, view: View) -> np.ndarray:
    """Two caliper crosses at the lesion's left and right edge, as a sonographer measures it."""
    out = pixels.copy()
    cy = int(round(view.center[0]))
    for cx in (view.center[1] - view.half_width, view.center[1] + view.half_width):
        x = int(round(cx))
        cv2.line(out, (x - 3, cy), (x + 3, cy), 255, 1)
        cv2.line(out, (x, cy - 3), (x, cy + 3), 255, 1)
    return out


def patient_labels(n_patients: int, malignant_fraction: float, seed: int) -> list[str]:
    """Class of each patient: exactly ``round(n * fraction)`` malignant, in seeded order."""
    n_malignant = int(round(n_patients * malignant_fraction))
    labels = [CLASS_NAMES[1]] * n_malignant + [CLASS_NAMES[0]] * (n_patients - n_malignant)
    np.random.default_rng([seed, 0]).shuffle(labels)
    return labels


def annotated_copy(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """A copy as a scanner might save it again: calipers, a text line, a slight crop, other gain."""
    h, w = pixels.shape
    out = pixels.copy()
    y, x = int(rng.integers(h // 3, 2 * h // 3)), int(rng.integers(w // 3, 2 * w // 3))
    cv2.line(out, (x - 3, y), (x + 3, y), 255, 1)
    cv2.line(out, (x, y - 3), (x, y + 3), 255, 1)
    cv2.putText(out, "L 12MHz", (2, 8), cv2.FONT_HERSHEY_SIMPLEX, 0.25, 255, 1)
    top, left, bottom = (int(round(f * n)) for f, n in zip(rng.uniform(0.0, 0.02, 3), (h, w, h)))
    out = out[top : h - bottom, left:]
    return np.clip(out.astype(np.float64) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)


def generate(spec: PhantomSettings) -> list[PhantomImage]:
    """Generate the whole phantom dataset described by ``spec``.

    Image ``j < count`` belongs to patient ``j // images_per_patient``; then
    come ``near_copies`` annotated copies, each under a patient id of its own
    (``D0001``...).  Every patient and image draws from its own seeded stream,
    so the output depends only on ``spec``.
    """
    height, width = int(round(spec.native_size * 0.75)), spec.native_size
    n_patients = -(-spec.count // spec.images_per_patient)
    labels = patient_labels(n_patients, spec.malignant_fraction, spec.seed)
    images = []
    for j in range(spec.count):
        p, k = divmod(j, spec.images_per_patient)
        malignant = labels[p] == CLASS_NAMES[1]
        lesion = draw_lesion(np.random.default_rng([spec.seed, 1, p]), malignant, spec.difficulty)
        # The planted shortcuts draw from streams of their own, so that at 0 nothing else changes.
        wider = malignant and np.random.default_rng([spec.seed, 4, p]).uniform() < spec.size_shortcut
        measured = malignant and np.random.default_rng([spec.seed, 5, p]).uniform() < spec.caliper_shortcut
        view = render_image(np.random.default_rng([spec.seed, 2, p, k]), lesion, height,
                            int(round(width * 1.25)) if wider else width, site=spec, lesion_width=width)
        pixels = draw_calipers(view.pixels, view) if measured else view.pixels
        images.append(PhantomImage(pixels, labels[p], f"P{p + 1:04d}", k + 1))
    copy_rng = np.random.default_rng([spec.seed, 3])
    sources = np.sort(copy_rng.choice(spec.count, size=min(spec.near_copies, spec.count), replace=False))
    for c, j in enumerate(sources):
        images.append(PhantomImage(annotated_copy(copy_rng, images[j].pixels), images[j].label, f"D{c + 1:04d}", 1))
    return images
