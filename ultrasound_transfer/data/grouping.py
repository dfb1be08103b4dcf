"""Groups of images that must stay on one side of every cross-validation split."""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ultrasound_transfer.common import PipelineError


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def join_on_keys(uf: UnionFind, keys: Iterable[Hashable]) -> None:
    """Put every two items with equal (non-empty) key into one set."""
    first: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        if key is None or key == "":
            continue
        if key in first:
            uf.union(first[key], i)
        else:
            first[key] = i


def merge_groups(cases: Sequence[str], pixel_hashes: Sequence[str], pairs: Iterable[tuple[int, int]] = ()) -> list[str]:
    """Final group of each image: same case, identical pixels, or a linked pair means same group.

    The relations are joined transitively (union-find), so if image A shares its
    case with B and its pixels with C, and C is a near-copy of D, then A, B, C
    and D form one group.  A group is named after the first case (in input
    order) that belongs to it, which keeps names readable and stable.
    """
    uf = UnionFind(len(cases))
    join_on_keys(uf, cases)
    join_on_keys(uf, pixel_hashes)
    for i, j in pairs:
        uf.union(int(i), int(j))
    return [cases[uf.find(i)] for i in range(len(cases))]


def fewest_groups_per_class(labels: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    """The class with the fewest distinct groups, and that number of groups.

    A K-fold split grouped by patient can put every class in every fold only if
    this number is at least K.
    """
    counts = {int(c): len(np.unique(groups[labels == c])) for c in np.unique(labels)}
    label = min(counts, key=counts.get)
    return label, counts[label]


def inner_validation_split(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` of a training part into fit and validation parts.

    The split is stratified and grouped, like the outer folds, and is taken
    from the training part only, so early stopping never sees the test fold.
    ``fraction = 0`` returns no validation part.
    """
    positions = np.arange(len(labels))
    if fraction <= 0:
        return positions, positions[:0]
    n_splits = max(2, int(round(1 / fraction)))
    label, n_groups = fewest_groups_per_class(labels, groups)
    if n_groups < n_splits:
        raise PipelineError(
            f"finetune.validation_fraction = {fraction} needs at least {n_splits} groups per class "
            f"in each training part, but class {label} has {n_groups}; raise validation_fraction, "
            "set it to 0 (no early stopping), or lower cv.n_splits."
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fit, validation = next(splitter.split(positions, labels, groups))
    return fit, validation
