"""Timing one child process: its own resources, its errors, and no hang on a talkative child."""

import os
import sys

import pytest

from benchmarks.processes import ERROR_TAIL_CHARS, GLIBC_DEFAULT_HEAP, child_environment, timed_process


def test_a_child_that_writes_more_than_a_pipe_holds_is_waited_for_and_measured(tmp_path):
    # 1 MiB to standard error, then 200 MB held: a pipe nobody reads would stop the child at 64 KiB.
    script = ("import sys; sys.stderr.write('x' * (1 << 20)); block = bytearray(200 * 1024 * 1024); "
              "block[::4096] = b'1' * len(block[::4096])")
    usage = timed_process([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), what="a child")
    assert usage.seconds > 0 and usage.user_s + usage.system_s > 0
    assert usage.peak_mb > 200                                  # that child's own peak: the block it touched
    assert usage.page_faults > 200 * 1024 * 1024 // 4096 // 2   # each touched page faulted in


def test_a_failed_child_stops_the_benchmark_with_what_it_was_and_the_end_of_its_errors(tmp_path):
    script = "import sys; sys.stderr.write('a' * 5000 + 'the cause'); sys.exit(3)"
    with pytest.raises(SystemExit) as stopped:
        timed_process([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), what="finetune of VGG16")
    message = str(stopped.value)
    assert message.startswith(f"finetune of VGG16 failed (exit 3) in {tmp_path}")
    assert message.endswith("the cause") and "a" * 100 in message and "a" * ERROR_TAIL_CHARS not in message


def test_a_childs_heap_setting_is_its_own_whatever_the_caller_set(monkeypatch, tmp_path):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "999")
    monkeypatch.setenv("SOME_CALLER_VARIABLE", "kept")
    assert "MALLOC_TOP_PAD_" not in child_environment({})
    glibc = child_environment(GLIBC_DEFAULT_HEAP)
    assert glibc["MALLOC_TOP_PAD_"] == "131072"                  # glibc's own default, 128 KiB
    assert glibc["SOME_CALLER_VARIABLE"] == "kept"
    # Seen by a real child: the caller's 999 does not reach it.
    script = "import os; assert os.environ.get('MALLOC_TOP_PAD_') is None"
    timed_process([sys.executable, "-c", script], cwd=tmp_path, env=child_environment({}), what="a child")
