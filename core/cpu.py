"""What the CPU can do, read from /proc/cpuinfo without importing torch."""

from __future__ import annotations

import functools


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags (x86 "flags", ARM "Features"); empty where /proc/cpuinfo is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
