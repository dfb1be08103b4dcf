"""Where an output came from: the code revision and the hashes of the files it was made from."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from ultrasound_transfer.source_files import REPO_ROOT

# The repository's code: what a run's results depend on besides params.yaml (recorded on its own) and
# the data.  The pipeline's outputs, also tracked in git (dvc.lock, metrics/), are not code.
CODE_PATHS = ("dvc.yaml", "stages", "ultrasound_transfer", "pyproject.toml", "requirements.txt")


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_revision(root: Path = REPO_ROOT) -> str:
    """The git commit of the code, ``+uncommitted`` when a tracked file of :data:`CODE_PATHS` differs from it;
    ``unknown`` outside git.

    Only code counts: a ``dvc repro`` rewrites tracked outputs (``dvc.lock``,
    ``metrics/``) as it runs, which left every run of a fresh clone marked
    uncommitted; and params are recorded beside the revision.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+uncommitted" if dirty else "")
