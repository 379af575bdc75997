"""A weightless embedder: log-mel statistics. Always available; for tests and machines with nothing else."""

from __future__ import annotations

import numpy as np

from ..hookspecs import hookimpl
from . import Embedder
from .features import mel_filterbank, mel_spectrogram


class LogMelStats(Embedder):
    name = "dsp-logmel"
    version = "1"
    dim = 192
    sample_rate = 16000
    description = "log-mel band statistics (no weights, always available)"
    n_fft, hop, n_mels, parts = 512, 160, 32, 4

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._filters = mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, 50.0, 8000.0)

    def embed_batch(self, batch):
        mel = mel_spectrogram(batch, self.n_fft, self.hop, self._filters)
        logmel = np.log(mel + 1e-6)  # (batch, frames, mels)
        logmel -= logmel.mean(axis=(1, 2), keepdims=True)  # level-independent
        # The spectral envelope of each quarter of the window (so order in time counts), its spread, its movement.
        quarters = [q.mean(axis=1) for q in np.array_split(logmel, self.parts, axis=1)]
        spread = logmel.std(axis=1)
        movement = np.abs(np.diff(logmel, axis=1)).mean(axis=1)
        return np.concatenate([*quarters, spread, movement], axis=1), None


@hookimpl
def register_embedders(register):
    register(LogMelStats)
