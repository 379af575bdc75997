"""Handing freed memory back to the system."""

from __future__ import annotations

import ctypes


def return_freed_memory() -> None:
    """glibc keeps freed blocks for reuse, so a process that drops something large (a retrained index, a
    torch model it no longer needs) still holds its pages; malloc_trim gives them back."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
