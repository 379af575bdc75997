"""Compare two engines of one model on the user's own recordings, before choosing the faster one.

The checks at load (embedders.probe) use a synthetic probe; how far int8 or bfloat16 drift on real audio with
the real weights depends on both, so this measures it where both are: the same windows embedded by each
engine, how close each embedding stays, whether search would see the same neighbours, and each one's time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .decode import display_path, read_blocks
from .errors import AudioSimError
from .models import choose_embedder
from .scan import audio_files
from .segments import cut_windows


@dataclasses.dataclass(frozen=True)
class EngineComparison:
    model: str
    reference: str  # the engines that ran, e.g. "torch" and "onnxruntime-int8"
    candidate: str
    files: int
    windows: int
    min_cosine: float
    mean_cosine: float
    shared_neighbours: float  # of each window's k nearest other windows, the share both engines agree on
    same_nearest: float  # the share of windows whose nearest other window is the same
    k: int
    reference_s: float
    candidate_s: float
    failed: list[tuple[str, str]]


def compare_engines(
    model: str,
    model_dir: Path,
    paths: Iterable[str],
    candidate: str,
    reference: str = "torch",
    max_windows: int = 256,
    k: int = 10,
) -> EngineComparison:
    """Embed up to ``max_windows`` windows, spread over the files under ``paths``, with the ``reference`` and
    the ``candidate`` runtime of ``model``, and say how far apart the two are."""
    engines = [choose_embedder(model, None, model_dir, runtime=runtime) for runtime in (reference, candidate)]
    failed: list[tuple[str, str]] = []
    files = list(audio_files(paths, failed))
    windows = _spread_windows(files, engines[0], max_windows, failed)
    if len(windows) < 2:
        raise AudioSimError(f"Need at least 2 windows of audio to compare engines; found {len(windows)}")
    vectors, seconds = [], []
    for embedder in engines:
        embedder.embed(windows[: embedder.batch_size])  # loads the model and pays first-call costs, untimed
        started = time.perf_counter()
        vectors.append(embedder.embed(windows).vectors)
        seconds.append(time.perf_counter() - started)
    cosines = np.sum(vectors[0] * vectors[1], axis=1)
    k = min(k, len(windows) - 1)
    nearest = [_nearest_others(v, k) for v in vectors]
    shared = np.mean([len(set(a) & set(b)) / k for a, b in zip(*nearest, strict=True)])
    return EngineComparison(
        model=model,
        reference=engines[0].engine,
        candidate=engines[1].engine,
        files=len(files),
        windows=len(windows),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        shared_neighbours=float(shared),
        same_nearest=float(np.mean(nearest[0][:, 0] == nearest[1][:, 0])),
        k=k,
        reference_s=seconds[0],
        candidate_s=seconds[1],
        failed=failed,
    )


def _spread_windows(files: list[str], embedder, max_windows: int, failed: list) -> list[np.ndarray]:
    """At most ``max_windows`` windows, an equal share from each file: a long file must not crowd out the rest."""
    share = max(1, math.ceil(max_windows / max(1, len(files))))
    windows = []
    for path in files:
        try:
            blocks = read_blocks(path, embedder.sample_rate)
            for n, window in enumerate(cut_windows(blocks, embedder.sample_rate, embedder.window_s, embedder.hop_s)):
                if n == share or len(windows) == max_windows:
                    break
                windows.append(window.samples)
        except AudioSimError as e:  # one bad file costs its windows, not the comparison
            failed.append((display_path(path), str(e)))
    return windows


def _nearest_others(vectors: np.ndarray, k: int) -> np.ndarray:
    """Each row's k most similar other rows (vectors are unit length), nearest first."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]
