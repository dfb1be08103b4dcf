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

    The split is grouped (a group's images stay together) and stratified: per
    class, whole groups are taken in a seeded random order into the
    validation part whenever that brings its image count closer to
    ``fraction`` of the class's images.  This greedy pass lands within about
    one group of the target (not always the closest sum whole groups could
    reach); ``finetune`` logs the realised share and ``fold_parts.csv``
    records the parts.  Each class keeps at least one group on each side.  A group
    counts under its most frequent label.  It is taken from the training part
    only, so early stopping and the operating point never see the test fold.
    ``fraction = 0`` returns no validation part.
    """
    positions = np.arange(len(labels))
    if fraction <= 0:
        return positions, positions[:0]
    label_of_group: dict = {}
    for group in np.unique(groups):
        values, counts = np.unique(labels[groups == group], return_counts=True)
        label_of_group[group] = values[np.argmax(counts)]
    rng = np.random.default_rng(seed)
    chosen: list = []
    for label in np.unique(labels):
        members = sorted(g for g, lab in label_of_group.items() if lab == label)
        if len(members) < 2:
            raise PipelineError(
                f"finetune.validation_fraction = {fraction} needs at least 2 groups of class {label} in each "
                f"training part (one to fit, one to validate), but it has {len(members)}; set "
                "finetune.validation_fraction to 0 (no early stopping) with evaluation.operating_point: argmax, "
                "lower cv.n_splits, or add data."
            )
        sizes = {g: int(np.sum(groups == g)) for g in members}
        target = fraction * sum(sizes.values())
        taken, count = [], 0
        for g in rng.permutation(members):
            if len(taken) == len(members) - 1:
                break
            if not taken or abs(count + sizes[g] - target) < abs(count - target):
                taken.append(g)
                count += sizes[g]
        chosen += taken
    validation = np.isin(groups, chosen)
    return positions[~validation], positions[validation]
