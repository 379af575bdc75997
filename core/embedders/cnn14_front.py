"""Cnn14's own front end in torch: the STFT as two convolutions, then the mel filters and the log.

The modules and their parameters carry the names torchlibrosa gives them (panns_inference's front end), so the
published checkpoint loads as it is. torchlibrosa builds them through librosa, whose import brings numba and
LLVM along: building Cnn14 took a process from 219 to 445 MB, and every process that loads Cnn14 (an index run,
a Datasette serving uploads, the Label Studio backend) kept that for its life. The window, the Fourier basis and
the filters are a few lines of numpy; tests check them against torchlibrosa's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cnn14_stft import HOP_SIZE, WINDOW_SIZE
from .features import periodic_hann, slaney_mel_filterbank

BINS = WINDOW_SIZE // 2 + 1
AMIN = 1e-10  # the power below which the log is cut off


class _Stft(nn.Module):
    """Each frame times the periodic Hann window, against the cosines and sines of each bin's frequency."""

    def __init__(self):
        super().__init__()
        window = periodic_hann(WINDOW_SIZE)
        # The product reduced modulo the window first: exact angles for every bin, however high.
        angle = 2 * np.pi * (np.outer(np.arange(BINS), np.arange(WINDOW_SIZE)) % WINDOW_SIZE) / WINDOW_SIZE
        for name, basis in (("conv_real", np.cos(angle)), ("conv_imag", -np.sin(angle))):
            conv = nn.Conv1d(1, BINS, WINDOW_SIZE, stride=HOP_SIZE, bias=False)
            conv.weight = nn.Parameter(torch.from_numpy((basis * window)[:, None, :].astype(np.float32)), False)
            setattr(self, name, conv)


class PowerSpectrogram(nn.Module):
    """(batch, samples) -> (batch, 1, frames, 513) power spectra of centred, reflect-padded frames."""

    def __init__(self):
        super().__init__()
        self.stft = _Stft()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = F.pad(waveform[:, None, :], (WINDOW_SIZE // 2, WINDOW_SIZE // 2), mode="reflect")
        real, imag = self.stft.conv_real(x), self.stft.conv_imag(x)  # (batch, 513, frames)
        return (real**2 + imag**2)[:, None].transpose(2, 3)


class LogMel(nn.Module):
    """Power spectra -> mel-band powers in decibels (relative to 1, no floor but AMIN's)."""

    def __init__(self, sample_rate: int, mel_bins: int, fmin: float, fmax: float):
        super().__init__()
        filters = slaney_mel_filterbank(sample_rate, WINDOW_SIZE, mel_bins, fmin, fmax)
        self.melW = nn.Parameter(torch.from_numpy(np.ascontiguousarray(filters.T)), False)  # (513, mel_bins)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=AMIN))
