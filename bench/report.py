"""How a bench hands over its result: one JSON line on stdout, and the same, indented, in the --out file."""

from __future__ import annotations

import json


def report(result: dict, out: str | None) -> None:
    print(json.dumps(result))
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
