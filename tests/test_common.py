import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import REPO
from ultrasound_transfer.common import (
    INTERRUPTED,
    PipelineError,
    Progress,
    atomic_dir,
    clock_time,
    exclusive_lock,
    private_temporary_directory,
    remove_stale_temporaries,
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


def start_python(code, *args, **popen):
    """A child Python running ``code`` from the repository root, which has printed its first line (ready)."""
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **popen)
    assert child.stdout.readline().strip() == "ready", child.communicate()
    return child


def dead_pid():
    """The pid of a process that has ended (reaped: no process of that pid runs until the kernel reuses it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def this_host():
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())


def test_temporaries_name_their_host_and_process_and_still_match_the_ignore_patterns(tmp_path):
    import fnmatch

    seen = []
    write_atomic(tmp_path / "fold1.weights.h5", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"w")))
    with atomic_dir(tmp_path / "out") as tmp:
        seen.append(tmp.name)
    with atomic_dir(tmp_path / "out") as tmp:        # replaces the first: the old one goes through .out.old-*
        pass
    owner = f"{this_host()}-{os.getpid()}-"
    assert seen[0].startswith(f".fold1.weights.h5.tmp-{owner}") and seen[0].endswith(".weights.h5")
    assert seen[1].startswith(f".out.tmp-{owner}")
    for name in seen:
        assert fnmatch.fnmatch(name, ".*.tmp-*")      # .gitignore and .dvcignore


def test_a_hard_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path, capsys):
    child = start_python("import sys, time; from pathlib import Path; from ultrasound_transfer.common import "
                         "atomic_dir\nwith atomic_dir(Path(sys.argv[1])) as tmp:\n    (tmp / 'pixels.npy')"
                         ".write_bytes(b'x' * 2_000_000); print('ready', flush=True); time.sleep(60)",
                         tmp_path / "out")
    child.kill()
    child.communicate()
    left = [p for p in tmp_path.iterdir()]
    assert [p.name.startswith(f".out.tmp-{this_host()}-{child.pid}-") for p in left] == [True]
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert f"[cleanup] removed {left[0]} (2.0 MB), left by process {child.pid} of this host, which is no longer " \
           "running" in capsys.readouterr().out


def test_stale_temporaries_of_ended_processes_go_those_of_live_ones_and_other_hosts_stay(tmp_path, capsys):
    target = tmp_path / "VGG16.weights.h5"
    gone, host = dead_pid(), this_host()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale_file = tmp_path / f".VGG16.weights.h5.tmp-{host}-{gone}-abc_1234.weights.h5"
        stale_old = tmp_path / f".VGG16.weights.h5.old-{host}-{gone}-x9y8z7w6"
        live = tmp_path / f".VGG16.weights.h5.tmp-{host}-{sleeper.pid}-abcdefgh.weights.h5"
        other_host = tmp_path / f".VGG16.weights.h5.tmp-not-{host}-{gone}-abcdefgh.weights.h5"
        unknown = tmp_path / ".VGG16.weights.h5.tmp-abcdefgh.weights.h5"      # named before owners were
        another_output = tmp_path / f".VGG16.json.tmp-{host}-{gone}-abcdefgh.json"
        for path in (stale_file, live, other_host, unknown, another_output):
            path.write_bytes(b"x" * 1000)
        stale_old.mkdir()
        (stale_old / "VGG16.weights.h5").write_bytes(b"x")
        assert sorted(remove_stale_temporaries(target)) == sorted([stale_file, stale_old])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_host, unknown,
                                                                                     another_output))
        out = capsys.readouterr().out
        assert out.count("[cleanup] removed") == 2
        assert f"[cleanup] kept {other_host} (0.0 MB): process {gone} on not-{host} made it, which cannot be " \
               f"checked from {host}; delete it if no run there is writing {target}" in out
        assert f"[cleanup] kept {unknown} (0.0 MB): its name does not say which process made it" in out
        write_atomic(target, lambda tmp: tmp.write_bytes(b"w"))          # the writes call it themselves
        assert live.exists() and target.read_bytes() == b"w"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(target) == [live]


def test_private_temporary_directories_name_their_owner_and_replace_stale_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"ut-test-{this_host()}-{dead_pid()}-abcdefgh"
    (stale / "copy").mkdir(parents=True)
    unrelated = tmp_path / f"other-{this_host()}-{dead_pid()}-abcdefgh"
    unrelated.mkdir()
    with private_temporary_directory("ut-test-") as folder:
        assert folder.parent == tmp_path and folder.name.startswith(f"ut-test-{this_host()}-{os.getpid()}-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        (folder / "scan.png").write_bytes(b"x")
        assert not stale.exists() and unrelated.exists()
    assert not folder.exists()
    assert f"[cleanup] removed {stale}" in capsys.readouterr().out


INTERRUPTIBLE = """
import sys, time
from pathlib import Path
from ultrasound_transfer.common import atomic_dir, run_stage

def main(argv):
    with atomic_dir(Path(sys.argv[1]) / "out") as tmp:
        (tmp / "half.npy").write_bytes(b"x")
        try:
            print("ready", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            if sys.argv[2] == "TypeError":      # as a library that catches the interrupt midway may
                raise TypeError("'NoneType' object is not callable")
            raise

run_stage(main)
"""


@pytest.mark.parametrize("becomes", ["KeyboardInterrupt", "TypeError"])
def test_ctrl_c_ends_a_run_with_one_line_and_status_130_leaving_nothing_half_written(tmp_path, becomes):
    child = start_python(INTERRUPTIBLE, tmp_path, becomes)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130
    assert err == INTERRUPTED + "\n" and err.startswith("interrupted: ")
    assert list(tmp_path.iterdir()) == []


def test_run_stage_puts_back_the_signal_handlers_it_found(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stage"])
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run_stage(lambda argv: None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_exception_without_an_interrupt_is_not_called_one(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(TypeError):
        run_stage(lambda argv: None + 1)
