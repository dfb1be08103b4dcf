"""Training-time augmentation suited to B-mode ultrasound (off by default, as in the paper).

Only changes an ultrasound image could plausibly show are drawn:

* **horizontal flip**: the transducer can be held either way round; there is
  no vertical flip, because depth runs downward and acoustic shadowing or
  enhancement always falls *below* a lesion;
* **small affine**: rotation, shift and zoom, as a slightly different probe
  position would give; uncovered borders are black, like the letterbox;
* **gain**: the operator's overall gain, a brightness factor;
* **speckle jitter**: multiplicative, slightly correlated noise, as a fresh
  speckle realisation would give.

Images are transformed as gray uint8, before the network's own preprocessing.
Each batch draws from a generator seeded by (seed, epoch, batch), so a run
repeats exactly.  Augmentation changes what the network sees each epoch, so it
disables frozen-prefix caching (:mod:`ultrasound_transfer.networks.frozen_prefix`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ultrasound_transfer.settings import AugmentationSettings


def augment_batch(images: np.ndarray, augmentation: AugmentationSettings, rng: np.random.Generator) -> np.ndarray:
    """Randomly transformed copies of gray uint8 images ``(B, S, S)``."""
    out = np.empty_like(images)
    size = images.shape[1]
    for i, image in enumerate(images):
        if rng.random() < augmentation.flip:
            image = image[:, ::-1]
        angle = rng.uniform(-augmentation.rotate_deg, augmentation.rotate_deg)
        zoom = rng.uniform(1 - augmentation.scale, 1 + augmentation.scale)
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
        matrix[:, 2] += rng.uniform(-augmentation.shift, augmentation.shift, size=2) * size
        moved = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
        moved *= rng.uniform(1 - augmentation.gain, 1 + augmentation.gain)
        if augmentation.speckle > 0:
            grain = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), 0.7)
            moved *= 1 + augmentation.speckle * grain / max(float(grain.std()), 1e-6)
        out[i] = np.clip(np.rint(moved), 0, 255)
    return out
