"""How the C heap holds memory between a network's steps: kept for the next step, not handed back each time.

Every training or prediction step allocates its activations, gradients and
oneDNN scratch buffers anew and frees them at its end.  TensorFlow's CPU
tensors come from glibc's ``malloc``, which gives each worker thread its own
arena; by default a thread arena's heap is shrunk as soon as its free top
exceeds glibc's ``M_TOP_PAD`` (128 KiB): the pages go back to the kernel
(``madvise(MADV_DONTNEED)``) and the next step faults them in again, each
one zeroed by the kernel.  On the demo's ``finetune`` of InceptionV3 that is
about 7 million page faults and 17 s of system time in a 48 s stage
(docs/speed.md, "The heap between steps").  Setting ``M_TOP_PAD`` to 64 MiB,
glibc's largest thread-arena heap on 64-bit systems (``HEAP_MAX_SIZE``), keeps
each arena's memory for reuse; the main arena keeps at most as much beyond
its use.  The arithmetic is unchanged (the same kernels on the same values:
outputs are byte for byte the same); the price is that memory a step freed
stays with the process for the next one: at most 64 MiB per arena and never
more than the arena's own peak (glibc pads a new heap's address space, not its
pages), so the peak resident memory barely moves (``benchmarks/heap.py``).

glibc's own switch comes first: a ``MALLOC_TOP_PAD_`` in the environment
(glibc reads it when the process starts) is left as it is, so
``MALLOC_TOP_PAD_=131072`` restores glibc's default for one run.  Elsewhere
(macOS, Windows, musl) nothing is changed.  Reference: ``mallopt(3)``,
``M_TOP_PAD`` and ``M_TRIM_THRESHOLD``; glibc ``malloc/arena.c``,
``heap_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's malloc.h: mallopt's parameter number for the top pad.
M_TOP_PAD = -2
TOP_PAD_BYTES = 64 * 1024 * 1024
ENVIRONMENT_SWITCH = "MALLOC_TOP_PAD_"


def keep_freed_memory() -> bool:
    """Let glibc's arenas keep up to :data:`TOP_PAD_BYTES` of freed memory for the next step (see the module);
    call once at the start of a process that runs networks.  True where the setting was made; False where
    glibc is not the C library or ``MALLOC_TOP_PAD_`` already chose (nothing changed)."""
    if ENVIRONMENT_SWITCH in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    return bool(ctypes.CDLL(library).mallopt(M_TOP_PAD, TOP_PAD_BYTES))
