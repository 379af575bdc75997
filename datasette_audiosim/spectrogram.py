"""Small spectrogram thumbnails as PNG, drawn with numpy and zlib (no imaging library needed)."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from audiosim.decode import load
from audiosim.embedders.features import mel_filterbank, mel_spectrogram

RATE, N_FFT, BANDS, SECONDS = 16000, 512, 48, 30.0
# A short dark-blue -> teal -> yellow ramp (viridis-like), interpolated to 256 colours.
_STOPS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)
PALETTE = np.stack(
    [np.interp(np.linspace(0, len(_STOPS) - 1, 256), np.arange(len(_STOPS)), _STOPS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)


def spectrogram_png(path: str, width: int = 240, height: int = BANDS) -> bytes:
    """The first 30 s of a file as a ``width`` x ``height`` mel spectrogram, low frequencies at the bottom."""
    audio = load(path, RATE, max_s=SECONDS)
    hop = max(1, len(audio) // width) if len(audio) > N_FFT else N_FFT // 4
    mel = mel_spectrogram(audio[None, :], N_FFT, hop, mel_filterbank(RATE, N_FFT, height, 30.0, 8000.0))[0]
    db = 10 * np.log10(mel + 1e-10)
    db = np.clip((db - (db.max() - 80.0)) / 80.0, 0.0, 1.0)  # 80 dB of range below the loudest cell
    columns = np.linspace(0, len(db) - 1, width).round().astype(int)
    image = PALETTE[(db[columns].T[::-1] * 255).astype(np.uint8)]  # (height, width, 3)
    return encode_png(image)


def encode_png(rgb: np.ndarray) -> bytes:
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
