import os
import re
import stat
import subprocess
import sys
import time

import pytest

from ultrasound_transfer.common import (
    PipelineError,
    Progress,
    atomic_dir,
    clock_time,
    exclusive_lock,
    run_stage,
    write_atomic,
)


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


def test_params_are_read_as_yaml_1_2_like_dvc_reads_them(tmp_path):
    from ultrasound_transfer.common import load_params

    path = tmp_path / "params.yaml"
    path.write_text("rate: 1e-05\nseed: 017\nbig: 1e5\nflag: yes\n")
    assert load_params(path) == {"rate": 1e-05, "seed": 17, "big": 100000.0, "flag": "yes"}


@pytest.mark.parametrize("text, message", [
    ("a: 1\nb: 2\na: 3\n", r"params.yaml, line 3: found duplicate key \"a\".*keep one of the two"),
    ("a: [1, 2\nb: 3\n", r"params.yaml, line \d+, column \d+: not valid YAML"),
    ("a:\n  b: 1\n c: 2\n", r"params.yaml, line 3, column \d+: not valid YAML"),
])
def test_duplicate_keys_and_syntax_errors_name_the_line(tmp_path, text, message):
    from ultrasound_transfer.common import load_params

    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(PipelineError, match=message):
        load_params(tmp_path / "params.yaml")


def test_a_truncated_json_input_names_the_file_and_the_fix(tmp_path):
    from ultrasound_transfer.common import read_json

    (tmp_path / "fold.json").write_text('{"folds": [{"test_indices": [1, 2')
    with pytest.raises(PipelineError, match=r"fold.json is not valid JSON \(line 1, column \d+.*delete it and "
                                            r"run dvc repro"):
        read_json(tmp_path / "fold.json")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_is_a_clear_error_naming_the_path_and_the_free_space(monkeypatch, capsys):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    def stage(argv):
        with open("/dev/full", "wb") as out:
            out.write(b"x" * 65536)
            out.flush()
    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(SystemExit) as stopped:
        run_stage(stage)
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert "cannot read or write an output of this stage: the disk is full (" in message
    assert "GB free on its file system); free space there" in message


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_an_output_that_fills_the_disk_is_named_with_what_it_had_written_and_leaves_nothing(tmp_path):
    def writer(tmp):
        tmp.write_bytes(b"x" * 3_000_000)             # what fitted
        with open("/dev/full", "wb") as full:      # then the disk is full
            full.write(b"x")
            full.flush()
    with pytest.raises(PipelineError, match=rf"cannot read or write {tmp_path / 'big.npy'}: the disk is full "
                                            r"\(.* GB free on its file system, after 3.0 MB of it were written: "
                                            r"it needs more\)"):
        write_atomic(tmp_path / "big.npy", writer)
    with pytest.raises(PipelineError, match=rf"cannot read or write {tmp_path / 'out'}: the disk is full"):
        with atomic_dir(tmp_path / "out") as tmp:
            writer(tmp / "a.npy")
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_still_raise(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(FileNotFoundError):
        run_stage(lambda argv: open("/nonexistent/dir/file"))


def test_a_second_process_on_a_locked_output_is_refused_naming_the_first(tmp_path):
    lock = tmp_path / "m" / ".finetune.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]);"
         "from pathlib import Path; from ultrasound_transfer.common import exclusive_lock\n"
         "with exclusive_lock(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(60)",
         str(lock), os.getcwd()], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PipelineError, match=rf"finetune of phantom/VGG16 is already running \(pid {holder.pid} "
                                                rf"on .*; lock {lock}\)"):
            with exclusive_lock(lock, "finetune of phantom/VGG16"):
                pass
    finally:
        holder.kill()
        holder.wait()
    for _ in range(50):     # the kernel drops the lock with the process: nothing to clean up
        try:
            with exclusive_lock(lock, "finetune of phantom/VGG16"):
                break
        except PipelineError:
            time.sleep(0.1)
    else:
        pytest.fail("the lock outlived its process")


def test_a_failing_input_is_named_not_the_output_being_written(tmp_path):
    import errno
    with pytest.raises(PipelineError, match=rf"cannot read or write {tmp_path / 'in.npz'}: permission denied"):
        with atomic_dir(tmp_path / "out"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "in.npz"))


def test_progress_counts_work_done_and_skipped_and_says_the_time_left_at_the_pace_so_far():
    progress = Progress(10, "epochs", upper_bound=True)
    assert str(progress).startswith("0/10 epochs, 0:00 so far") and "left" not in str(progress)
    time.sleep(0.05)
    progress.done(2)
    progress.skip(3)          # a fold stopped early: its remaining epochs will not run
    left = progress.seconds_left()
    assert left is not None and 0.05 * 5 / 2 <= left < 1.0      # 5 to go at >= 25 ms each
    assert re.fullmatch(r"5/10 epochs, 0:00 so far, at most 0:00 left", str(progress))
    assert "at most" not in str(Progress(3, "images"))
    assert [clock_time(s) for s in (0, 65, 3725)] == ["0:00", "1:05", "1:02:05"]


def test_progress_is_due_once_per_interval():
    progress = Progress(3, "images")
    assert not progress.due(every_s=60)
    assert progress.due(every_s=0) and progress.due(every_s=0)
