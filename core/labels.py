"""The 527 AudioSet class names in PANNs output order, shipped with the package so nothing downloads them.

Source: the Google AudioSet ontology (Gemmeke et al., ICASSP 2017), CC BY 4.0.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources


@functools.cache
def audioset_labels() -> list[str]:
    text = resources.files("audiosim").joinpath("data/audioset_class_labels_indices.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    return [row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"]))]
