"""The heap keeps freed memory between steps: measured as page faults in a fresh process, as in a stage."""

import os
import platform
import subprocess
import sys

import pytest

from ultrasound_transfer.networks import heap

# A stand-in for training steps: a worker thread (its own glibc arena, as TensorFlow's are) allocates 24 MiB
# in blocks below the mmap threshold, writes them and frees them, 20 times; prints the page faults it took.
STEPS = """
import ctypes, ctypes.util, resource, sys, threading
from ultrasound_transfer.networks.heap import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
BLOCK = 64 * 1024
def steps():
    for _ in range(20):
        blocks = [libc.malloc(BLOCK) for _ in range(384)]
        for block in blocks:
            libc.memset(block, 1, BLOCK)
        for block in reversed(blocks):
            libc.free(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=steps)
worker.start()
worker.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")


def run_steps(environment: dict[str, str]) -> tuple[bool, int]:
    """Whether the fresh process made the setting, and the page faults its steps took."""
    env = {key: value for key, value in os.environ.items() if key != heap.ENVIRONMENT_SWITCH} | environment
    made, faults = subprocess.run([sys.executable, "-c", STEPS], env=env, check=True, capture_output=True,
                                  text=True).stdout.split()
    return made == "True", int(faults)


@glibc_only
def test_freed_memory_is_kept_for_the_next_step():
    made, faults_kept = run_steps({})
    assert made
    # glibc's own switch, set to its default top pad: left as set, so the arena is shrunk after every step.
    made, faults_default = run_steps({heap.ENVIRONMENT_SWITCH: "131072"})
    assert not made
    pages_per_step = 384 * 64 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert faults_default > 10 * pages_per_step          # faulted in again, step after step
    assert faults_kept < 3 * pages_per_step              # faulted in once
    assert faults_kept * 5 < faults_default


def test_nothing_changes_without_glibc(monkeypatch):
    monkeypatch.delenv(heap.ENVIRONMENT_SWITCH, raising=False)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert heap.keep_freed_memory() is False
