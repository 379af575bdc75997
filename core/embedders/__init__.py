"""Embedders turn windows of audio into vectors. Subclasses implement ``embed_batch``; the base class batches."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Embedded:
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    class_scores: np.ndarray | None = None  # (n, len(labels)) for embedders that also tag


class Embedder:
    name: str = ""
    version: str = "1"
    dim: int = 0
    sample_rate: int = 16000
    # Two-second windows suit short effects and locate a match inside long files; a one-second hop
    # bounds the offset error to half a second and costs one vector per second of audio.
    window_s: float = 2.0
    hop_s: float = 1.0
    labels: list[str] | None = None
    description: str = ""
    engine: str = "numpy"  # what runs the model, for reports
    _pool: concurrent.futures.ThreadPoolExecutor | None = None  # the workers, made on first use
    _pool_lock = threading.Lock()
    _pool_pid = 0  # the process that made the workers

    def __init__(self, model_dir: Path | None = None, batch_size: int = 16, runtime: str = "auto"):
        self.model_dir = Path(model_dir) if model_dir else Path.home() / "panns_data"
        self.batch_size = batch_size
        self.runtime = runtime  # one of settings.RUNTIMES: which engine runs a neural model

    def unavailable_reason(self) -> str | None:
        """None when the embedder can run here, else what is missing and how to get it."""
        return None

    def embed_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embed a (batch, samples) float32 array of equal-length windows: (vectors, class scores or None)."""
        raise NotImplementedError

    def workers(self) -> int:
        """How many batches this engine runs at once, each on a thread of its own whose kernels use one core.
        1, the default: one batch at a time, its kernels spread over every core."""
        return 1

    def one_core(self) -> None:
        """Run once in each worker thread: keep this thread's kernels to one core."""

    def embed(self, windows: list[np.ndarray]) -> Embedded:
        """Embed windows of any length up to ``window_s``, in batches (on the workers, where the engine has them)."""
        batches = [windows[i : i + self.batch_size] for i in range(0, len(windows), self.batch_size)]
        # One batch runs here, on every core: split over the workers, a query's 9 windows took 190 ms, not 170.
        pool = self._workers() if len(batches) > 1 else None
        if pool is not None:
            outputs = list(pool.map(self._embed_padded, batches))
        else:
            outputs = [self._embed_padded(batch) for batch in batches]
        return _joined(outputs, self.dim)

    def submit(self, windows: list[np.ndarray]) -> concurrent.futures.Future:
        """A future of ``embed(windows)`` for at most a batch of windows: run by a worker where the engine has
        them, so that the caller can hand out the next batch meanwhile; else run now."""
        pool = self._workers()
        if pool is not None:
            return pool.submit(lambda: _joined([self._embed_padded(windows)], self.dim))
        done: concurrent.futures.Future = concurrent.futures.Future()
        try:
            done.set_result(self.embed(windows))
        except Exception as e:  # handed to whoever asks for the result, as a worker's would be
            done.set_exception(e)
        return done

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor | None:
        if self._pool is not None and self._pool_pid != os.getpid():
            self._pool = None  # a forked child: its parent's worker threads are not in it
        if self._pool is None and self.workers() > 1:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.workers(), thread_name_prefix="audiosim-embed", initializer=self.one_core
                    )
                    self._pool_pid = os.getpid()
        return self._pool

    def _embed_padded(self, windows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        target = self.window_samples
        vectors, scores = self.embed_batch(np.stack([loop_pad(w, target) for w in windows]))
        return np.asarray(vectors, dtype=np.float32), None if scores is None else np.asarray(scores, dtype=np.float32)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def identity(self) -> str:
        return f"{self.name} v{self.version} ({self.dim}-d)"


def _joined(outputs: list, dim: int) -> Embedded:
    vectors = np.concatenate([v for v, _ in outputs]) if outputs else np.zeros((0, dim), np.float32)
    scores = [s for _, s in outputs if s is not None]
    return Embedded(l2_normalise(vectors), np.concatenate(scores) if scores else None)


def loop_pad(window: np.ndarray, length: int) -> np.ndarray:
    """Repeat a short window until it fills ``length``: a looped click still sounds like a click, silence would not."""
    if len(window) >= length:
        return window[:length]
    if len(window) == 0:
        return np.zeros(length, dtype=np.float32)
    return np.tile(window, -(-length // len(window)))[:length]


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows. An all-zero row (digital silence, for some models) becomes the uniform unit vector,
    so silence matches silence instead of producing NaN scores."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    dead = norms[:, 0] < 1e-12
    if dead.any():
        vectors = vectors.copy()
        vectors[dead] = 1.0
        norms[dead] = np.sqrt(vectors.shape[1])
    return vectors / norms
