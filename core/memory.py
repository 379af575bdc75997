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


M_MMAP_THRESHOLD = -3  # mallopt's parameter, from glibc's malloc.h
LARGE_BLOCK = 1 << 20


def map_large_blocks_apart(threshold: int = LARGE_BLOCK) -> None:
    """Give every block of ``threshold`` bytes or more its own mapping, handed back to the system when freed.
    glibc starts that way (from 128 kB) but raises the threshold to the size of each mapped block freed, up to
    32 MB; a model's activations then come from the heap, and a long run leaves it holed and resident."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, threshold)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
