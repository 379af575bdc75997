"""Cnn14's convolutions in 8-bit integers, through ONNX Runtime: measured on this project's 2-core AVX2 machine,
a batch of 16 windows takes 0.6 s, against 1.0 s in float32 (bench/ingest.py has the pipeline figures).

Static quantization: each convolution's weights get one int8 scale per output channel, and its input one uint8
scale, fixed once from the ranges a calibration batch of generated sounds reaches. The front end (STFT,
log-mel) and the first convolution stay float32: the STFT's output spans many decades before its log, and the
first convolution sees the normalised log-mel directly. Measured on 96 generated sounds: the first convolution
quantized as well brought the least cosine to float32 from 0.995 down to 0.75, and the front end too to 0.70. The
dense layers stay float32 too: they are a small share of the time and they carry the class scores.

Calibration sounds are synthetic, and so is the probe the result is checked on at load, so how far real audio
drifts with the real weights is not measured here: that is why ``--runtime int8`` is asked for, never chosen
by ``auto``.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

# Least embedding cosine, most class-probability error on the probe. Measured on the tests' random-weight Cnn14
# with calibrated batch norms: cosine >= 0.9948 on 96 generated sounds, top-10 neighbour sets 98 % the same.
AGREEMENT = 0.99, 0.05

KEEP_FLOAT32 = (
    "/spectrogram_extractor/conv_real/Conv",
    "/spectrogram_extractor/conv_imag/Conv",
    "/conv_block1/conv1/Conv",
)
GAINS = (1.0, 0.3, 0.05, 0.01)  # quiet recordings too: each convolution's input range must cover them


def calibration_batches(batch_size: int = 4):
    """Generated 2 s windows at 32 kHz, every kind of test sound at several levels, in small batches."""
    from ..synth import KINDS, collage, sound

    windows = [
        sound(kind, 2.0, seed=3000 + 7 * i + j) * gain for i, kind in enumerate(KINDS) for j, gain in enumerate(GAINS)
    ]
    windows += [collage(2.0, seed=seed) for seed in range(4)]
    batch = np.stack(windows).astype(np.float32)
    return [batch[i : i + batch_size] for i in range(0, len(batch), batch_size)]


def quantize(plain_graph: bytes, destination: str) -> None:
    """Write the int8 twin of the float32 graph ``plain_graph`` (as exported, not yet optimised) to ``destination``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"waveform": batch}

    with _without_preprocessing_advice():
        quantize_static(
            onnx.load_from_string(plain_graph),
            destination,
            Calibration(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=list(KEEP_FLOAT32),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


class _PreprocessingAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _without_preprocessing_advice():
    """The quantizer advises, on the root logger, shape inference and folding first: torch's export already
    folded the batch norms and inferred the shapes, so the advice would only alarm the user."""
    advice = _PreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(advice)
