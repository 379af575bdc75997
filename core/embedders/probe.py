"""The probe batch a faster twin of Cnn14 (ONNX Runtime, bfloat16) must answer like the float32 torch model."""

from __future__ import annotations

import numpy as np

PROBE_SAMPLES = 64000  # one 2 s window at 32 kHz


def probe() -> np.ndarray:
    """A deterministic batch of noise and a tone."""
    rng = np.random.default_rng(0)
    t = np.arange(PROBE_SAMPLES, dtype=np.float32) / 32000
    return np.stack([0.1 * rng.standard_normal(PROBE_SAMPLES), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)


def reference(model) -> list[np.ndarray]:
    """The float32 torch model's outputs on the probe: what a twin must reproduce."""
    import torch

    with torch.inference_mode():
        return [o.numpy().copy() for o in model(torch.from_numpy(probe()))]


def disagreement(expected: list[np.ndarray], twin, min_cosine: float, max_score_error: float) -> str | None:
    """None when ``twin`` (numpy batch -> embeddings, class scores) answers the probe like ``expected``: each
    embedding at least ``min_cosine`` from the reference's, each class probability within ``max_score_error``;
    else how far off it is."""
    embeddings, scores = twin(probe())
    want = expected[0] / np.maximum(np.linalg.norm(expected[0], axis=1, keepdims=True), 1e-12)
    got = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    cosine = float(np.min(np.sum(want * got, axis=1)))
    if not cosine >= min_cosine:  # also catches NaN
        return f"embeddings differ (cosine {cosine:.6f} < {min_cosine})"
    error = float(np.max(np.abs(expected[1] - scores)))
    if not error <= max_score_error:
        return f"class scores differ by {error:.3g} (more than {max_score_error})"
    return None
