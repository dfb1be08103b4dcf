"""Finished folds of a ``finetune`` run, kept so that an interrupted run resumes.

A run over five folds of ResNet101 on real data takes hours; a power cut or a
Ctrl-C in fold 4 should not cost folds 1 to 3.  After each fold, ``finetune``
saves that fold's weights, predictions, features and history here; the stage's
real outputs are only written, all at once, after the last fold.  A rerun
with the *same* inputs, params and code skips the folds found here and starts
at the first unfinished one.  Each fold starts from the same restored initial
state and seed whether or not earlier folds ran in the same process, so the
resumed run gives what an uninterrupted run gives.

Anything else (changed params, data or code) makes the folds here stale: they
are deleted, never mixed into the new run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ultrasound_transfer.common import write_atomic


def run_fingerprint(settings: dict[str, Any], files: list[Path]) -> str:
    """SHA-256 over ``settings`` (as sorted JSON) and the bytes of ``files``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(f"\n{path}\n".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class FoldCheckpoints:
    """A folder of finished folds that belongs to one fingerprint."""

    def __init__(self, directory: Path | str, fingerprint: str) -> None:
        self.directory = Path(directory)
        stamp = self.directory / "fingerprint"
        if self.directory.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            write_atomic(stamp, lambda tmp: tmp.write_text(fingerprint))

    def finished(self) -> list[int]:
        """Folds saved completely, in order."""
        return sorted(int(p.name[4:-5]) for p in self.directory.glob("fold*.done"))

    def is_finished(self, fold: int) -> bool:
        return (self.directory / f"fold{fold}.done").exists()

    def weights(self, fold: int) -> Path:
        return self.directory / f"fold{fold}.weights.npz"

    def features(self, fold: int) -> Path:
        return self.directory / f"fold{fold}.features.npz"

    def save(self, fold: int, write_weights: Callable[[Path], None], tables: dict[str, pd.DataFrame],
             features: dict[str, np.ndarray]) -> None:
        """Save a finished fold; the ``.done`` marker, written last, makes it count.

        ``write_weights(path)`` writes the fold's network to ``path``;
        ``features`` are arrays saved together in one ``.npz``.
        """
        write_atomic(self.weights(fold), write_weights)
        write_atomic(self.features(fold), lambda tmp: np.savez(tmp, **features))
        for name, table in tables.items():
            write_atomic(self.directory / f"fold{fold}.{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
        self._mark_finished(fold)

    def _mark_finished(self, fold: int) -> None:
        # write_atomic has flushed the fold's files to the disk before this marker exists.
        write_atomic(self.directory / f"fold{fold}.done", lambda tmp: tmp.write_text(""))

    def table(self, fold: int, name: str) -> pd.DataFrame:
        """A table saved with fold ``fold``, read back with its floats exact."""
        return pd.read_csv(self.directory / f"fold{fold}.{name}.csv", float_precision="round_trip")

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
