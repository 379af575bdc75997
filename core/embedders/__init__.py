"""Embedders turn windows of audio into vectors. Subclasses implement ``embed_batch``; the base class batches."""

from __future__ import annotations

import dataclasses
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

    def __init__(self, model_dir: Path | None = None, batch_size: int = 16, runtime: str = "auto"):
        self.model_dir = Path(model_dir) if model_dir else Path.home() / "panns_data"
        self.batch_size = batch_size
        self.runtime = runtime  # "auto", "torch", "onnx", "bfloat16" or "int8": which engine runs a neural model

    def unavailable_reason(self) -> str | None:
        """None when the embedder can run here, else what is missing and how to get it."""
        return None

    def embed_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Embed a (batch, samples) float32 array of equal-length windows: (vectors, class scores or None)."""
        raise NotImplementedError

    def embed(self, windows: list[np.ndarray]) -> Embedded:
        """Embed windows of any length up to ``window_s``, in batches."""
        target = self.window_samples
        vectors, scores = [], []
        for i in range(0, len(windows), self.batch_size):
            batch = np.stack([loop_pad(w, target) for w in windows[i : i + self.batch_size]])
            v, s = self.embed_batch(batch)
            vectors.append(np.asarray(v, dtype=np.float32))
            if s is not None:
                scores.append(np.asarray(s, dtype=np.float32))
        out = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return Embedded(l2_normalise(out), np.concatenate(scores) if scores else None)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def identity(self) -> str:
        return f"{self.name} v{self.version} ({self.dim}-d)"


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
