"""How much memory a piece of code holds at its peak, for tests that bound it."""

from __future__ import annotations

import tracemalloc
from typing import Callable


def traced_peak(consume: Callable[[], object]) -> int:
    """The peak of memory traced (numpy's arrays and OpenCV's decoded images included) while ``consume()`` runs."""
    tracemalloc.start()
    try:
        consume()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
