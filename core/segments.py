"""Cut a stream of audio blocks into fixed windows at a fixed hop, holding only one window's worth at a time.

Every clip gets at least one window; the last window is aligned to the clip's end so no tail goes unheard.
A clip shorter than a window becomes one short window (embedders loop-pad it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    samples: np.ndarray


def cut_windows(blocks: Iterable[np.ndarray], sample_rate: int, window_s: float, hop_s: float) -> Iterator[Window]:
    win = max(1, int(round(window_s * sample_rate)))
    hop = max(1, int(round(hop_s * sample_rate)))
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0  # absolute sample index of buffer[0]
    next_start = 0
    last_emitted = None
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while next_start + win <= buffer_start + len(buffer):
            offset = next_start - buffer_start
            yield _window(buffer[offset : offset + win], next_start, sample_rate)
            last_emitted = next_start
            next_start += hop
        # After the loop next_start > end - win, so the last `win` samples cover every future window.
        keep_from = buffer_start + len(buffer) - win
        if keep_from > buffer_start:
            buffer = buffer[keep_from - buffer_start :].copy()
            buffer_start = keep_from
    total = buffer_start + len(buffer)
    if total == 0:
        return
    if total <= win:
        if last_emitted is None:
            yield _window(buffer[-total:], 0, sample_rate)
        return
    tail_start = total - win
    if last_emitted is None or tail_start > last_emitted:
        offset = tail_start - buffer_start
        yield _window(buffer[offset : offset + win], tail_start, sample_rate)


def _window(samples: np.ndarray, start: int, sample_rate: int) -> Window:
    return Window(start / sample_rate, (start + len(samples)) / sample_rate, samples)
