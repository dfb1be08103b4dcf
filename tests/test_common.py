import os
import stat

import pytest

from ultrasound_transfer.common import atomic_dir, write_atomic


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("a")
        write_atomic(tmp_path / "b.txt", lambda p: p.write_text("b"))
    finally:
        os.umask(umask)
    assert mode(tmp_path / "out") == 0o755 and mode(tmp_path / "b.txt") == 0o644


def test_failed_block_leaves_previous_output_and_no_temporaries(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "good.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_writer_leaves_nothing(tmp_path):
    def broken(path):
        path.write_text("partial")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        write_atomic(tmp_path / "x.json", broken)
    assert list(tmp_path.iterdir()) == []


def test_writer_gets_a_temporary_name_with_every_suffix(tmp_path):
    seen = []
    write_atomic(tmp_path / "fold1.weights.h5", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"w")))
    assert seen[0].endswith(".weights.h5") and seen[0] != "fold1.weights.h5"
    assert [p.name for p in tmp_path.iterdir()] == ["fold1.weights.h5"]


def test_temporaries_of_atomic_writes_are_ignored_by_git_and_dvc(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    seen = []
    write_atomic(tmp_path / "VGG16.json", lambda tmp: (seen.append(tmp.name), tmp.write_text("{}")))
    with atomic_dir(tmp_path / "VGG16") as tmp:
        seen.append(tmp.name)
    dvc = Path(sys.executable).parent / "dvc"
    for name in seen:
        relative = f"metrics/cv/phantom/{name}"
        assert subprocess.run(["git", "check-ignore", "-q", "--no-index", relative], cwd=REPO).returncode == 0, name
        assert subprocess.run([str(dvc), "check-ignore", "-q", relative], cwd=REPO).returncode == 0, name
