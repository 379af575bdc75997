"""aiSFX (Ma et al., ISMIR 2022): a sound-effects CNN whose weights ship inside its PyPI package (CC BY 4.0).

Install it with ``pip install --no-deps aisfx`` (its metadata pins ancient numpy/librosa). We load its
checkpoint ourselves with ``weights_only=True`` and compute its input spectrogram in numpy.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelNotAvailable
from ..hookspecs import hookimpl
from . import Embedder
from .features import mel_filterbank, mel_spectrogram

N_FFT, HOP, MELS, FRAMES = 2048, 1024, 96, 100
LOG_MAX = 9.457798957824707  # the spectrogram maximum over aiSFX's training sets: its published normalisation


class AiSfx(Embedder):
    name = "aisfx"
    engine = "torch"
    version = "1"
    dim = 512
    sample_rate = 44100
    window_s = (FRAMES - 1) * HOP / 44100  # exactly FRAMES centred spectrogram frames, ~2.3 s
    description = "aiSFX sound-effects CNN (512-d, weights ship with the aisfx package)"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._net = None
        self._lock = threading.Lock()
        self._filters = mel_filterbank(self.sample_rate, N_FFT, MELS, 0.0, 22050.0)

    def unavailable_reason(self) -> str | None:
        return _checkpoint_problem()

    def load(self):
        with self._lock:
            if self._net is None:
                self._net = _load_embedding_net()
        return self._net

    def spectrogram(self, batch: np.ndarray) -> np.ndarray:
        peak = np.abs(batch).max(axis=1, keepdims=True)
        batch = batch / np.where(peak > 0, peak, 1.0)
        mel = mel_spectrogram(batch, N_FFT, HOP, self._filters)
        return (np.log10(mel * 10000.0 + 1.0) / LOG_MAX).astype(np.float32)  # (batch, frames, mels)

    def embed_batch(self, batch):
        import torch

        net = self.load()
        with torch.inference_mode():
            return net(torch.from_numpy(self.spectrogram(batch))).numpy(), None


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("aisfx")
    return Path(spec.origin).parent if spec and spec.origin else None


def _checkpoint_problem() -> str | None:
    if _package_dir() is None:
        return "package not installed; run: pip install --no-deps aisfx"
    if not (_package_dir() / "models" / "checkpoint.pth").exists():
        return "the aisfx package has no models/checkpoint.pth"
    return None


def _load_embedding_net():
    import torch

    reason = _checkpoint_problem()
    if reason:
        raise ModelNotAvailable(f"aisfx: {reason}")
    from aisfx.models.cnn2d import EmbeddingNet

    path = _package_dir() / "models" / "checkpoint.pth"
    try:
        # The checkpoint records dataset sizes as numpy scalars: allow exactly those two plain-data types.
        numpy_scalar = (np._core.multiarray.scalar, "numpy.core.multiarray.scalar")
        with torch.serialization.safe_globals([numpy_scalar, np.dtype, type(np.dtype("int64"))]):
            weights, _datasets = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelNotAvailable(f"aisfx: cannot load {path} ({type(e).__name__}: {e})") from e
    prefix = "embedding_net."
    net = EmbeddingNet("max", 3, 1, 64)  # the published X-Sequential-CE configuration
    net.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
    return net.eval()


@hookimpl
def register_embedders(register):
    register(AiSfx)
