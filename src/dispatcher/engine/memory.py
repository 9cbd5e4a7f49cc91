"""Handing the C heap's free memory back to the system once large bodies are gone.

Bodies of hundreds of KiB and more are allocated by the C library's malloc, and
glibc keeps what was freed for reuse: after a burst of large events a worker's RSS
stayed hundreds of MiB above its baseline with nothing alive in it. `malloc_trim`
returns those free pages. It is called only when the worker holds no claimed rows,
after enough body bytes went through it; where there is no glibc it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

# Body bytes claimed since the last trim before an idle worker trims again.
TRIM_AFTER_BYTES = 16 * 1024 * 1024


def _load_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


class HeapTrimmer:
    """Counts the body bytes claimed; `idle()` trims the heap when enough went by."""

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES,
                 trim: Callable[[int], int] | None = _TRIM) -> None:
        self._after = after_bytes
        self._trim = trim
        self._claimed = 0
        self.trims = 0

    def claimed(self, body_bytes: int) -> None:
        self._claimed += body_bytes

    def idle(self) -> None:
        """The worker holds no claimed rows: give free memory back if worth it."""
        if self._claimed < self._after:
            return
        self._claimed = 0
        if self._trim is not None:
            self._trim(0)
            self.trims += 1
