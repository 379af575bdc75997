"""How a bench hands over its result: one JSON line on stdout, and the same, indented, in the --out file, with
the machine it ran on (figures from different CPUs are not comparable)."""

from __future__ import annotations

import json
import os
import platform


def report(result: dict, out: str | None) -> None:
    print(json.dumps(result))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)


def machine() -> str:
    """The CPU's model and the widest vector instructions it has, e.g. "AMD EPYC, x86_64 AVX2, 2 cores"."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    isa = next((name for flag, name in ISAS if flag in flags), "")
    described = ", ".join(part for part in (model, f"{platform.machine()} {isa}".strip()) if part)
    return f"{described}, {os.cpu_count()} cores"


ISAS = (
    ("amx_bf16", "AMX"),
    ("avx512_bf16", "AVX-512 BF16"),
    ("avx512f", "AVX-512"),
    ("avx2", "AVX2"),
    ("asimd", "NEON"),
)
