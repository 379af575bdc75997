"""Small deterministic test sounds (tones, noise, chirps, clicks, chords) for the demo and the tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
from scipy.fft import next_fast_len

SR = 32000
KINDS = ("tone", "noise", "chirp", "clicks", "chord", "hum")


def sound(kind: str, seconds: float = 2.0, seed: int = 0, sr: int = SR) -> np.ndarray:
    """One sound of ``kind``; ``seed`` varies pitch, colour and rhythm within the kind."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * sr))
    t = np.arange(n) / sr
    if kind == "tone":
        f = 220 * 2 ** rng.uniform(0, 3)
        y = np.sin(2 * np.pi * f * t) * 0.5
    elif kind == "noise":
        # Coloured over a length the FFT factors well, then cut: a length with a large prime factor took up to
        # ten times as long, and noise was most of the time it took to make a long collage.
        fast = next_fast_len(n, real=True)
        spectrum = np.fft.rfft(rng.standard_normal(fast))
        tilt = np.maximum(np.fft.rfftfreq(fast, 1 / sr), 20.0) ** -rng.uniform(0.0, 1.0)
        y = np.fft.irfft(spectrum * tilt, fast)[:n]
        y = 0.3 * y / (np.abs(y).max() + 1e-9)
    elif kind == "chirp":
        f0, f1 = 100 * 2 ** rng.uniform(0, 3), 1000 * 2 ** rng.uniform(0, 3)
        if rng.random() < 0.5:
            f0, f1 = f1, f0  # some sweep down
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
        y = np.sin(phase) * 0.5
    elif kind == "clicks":
        y = np.zeros(n)
        period = int(sr / rng.uniform(4, 12))
        decay = np.exp(-np.arange(400) / 40.0) * rng.standard_normal(400)
        for start in range(0, n, period):
            end = min(n, start + 400)
            y[start:end] += decay[: end - start]
        y = 0.5 * y / (np.abs(y).max() + 1e-9)
    elif kind == "chord":
        root = 110 * 2 ** rng.uniform(0, 2)
        y = sum(np.sin(2 * np.pi * root * r * t) for r in (1, 1.26, 1.5, 2)) * 0.15
    elif kind == "hum":
        f = rng.uniform(45.0, 65.0)
        y = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 8)) * 0.2
        y *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    fade = min(n // 4, int(0.01 * sr))
    if fade:
        ramp = np.linspace(0, 1, fade)
        y[:fade] *= ramp
        y[-fade:] *= ramp[::-1]
    return y.astype(np.float32)


def collage(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A long recording made of 2-5 s events of every kind, so that each moment of it sounds different."""
    rng = np.random.default_rng(seed)
    parts, total = [], 0
    while total < seconds * sr:
        kind = KINDS[rng.integers(len(KINDS))]
        part = sound(kind, float(rng.uniform(2, 5)), int(rng.integers(1 << 30)), sr)
        parts.append(part)
        total += len(part)
    return np.concatenate(parts)[: int(seconds * sr)]


def write(path: str | os.PathLike, audio: np.ndarray, sr: int = SR, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(os.fspath(path), audio, sr, **kwargs)
    return path


def demo_corpus(folder: str | os.PathLike, per_kind: int = 4) -> list[Path]:
    """A small labelled corpus: ``per_kind`` clips of each kind plus a two-minute collage."""
    folder = Path(folder)
    written = []
    for kind in KINDS:
        for i in range(per_kind):
            seconds = 1.0 + (i % 3)
            written.append(write(folder / kind / f"{kind}-{i + 1}.wav", sound(kind, seconds, seed=100 + i)))
    written.append(write(folder / "recordings" / "field-recording.flac", collage(120.0, seed=7)))
    return written
