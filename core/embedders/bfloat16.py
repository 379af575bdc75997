"""Cnn14 in bfloat16 on CPUs with bfloat16 matrix instructions: AMX tiles (Intel Xeon since Sapphire Rapids) or
AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake). A batch of 16 two-second windows on 2 cores, measured:

    Xeon with AMX:        bfloat16 0.26 s, ONNX Runtime float32 0.56 s, torch eager 0.78 s
    EPYC Zen 4, BF16:     bfloat16 0.54 s, ONNX Runtime float32 0.75 s, torch eager 0.96 s

Without either, torch falls back to a reference convolution, about 7 s a batch (EPYC Zen 3, AVX2).
bench/ingest.py has the pipeline figures.

The front end stays float32: the log of a quiet sound's power needs float32's range and mantissa. Its STFT is
computed in numpy and scipy, as for ONNX Runtime (cnn14_stft.py), the log-mel and its batch norm in torch. The
convolutions and dense layers run in bfloat16 on channels-last tensors, the layout oneDNN maps onto AMX.
bfloat16 keeps 8 bits of mantissa, so embeddings move a little; the twin is used only when, on the probe batch,
it keeps the checkpoint's own float32 answers within ``AGREEMENT``.
"""

from __future__ import annotations

import logging

import numpy as np

from ..cpu import cpu_flags
from ..memory import return_freed_memory
from .cnn14_stft import power_spectra
from .probe import disagreement, reference

log = logging.getLogger(__name__)

# Least embedding cosine, most class-probability error. Measured on a random-weight Cnn14 with calibrated batch
# norms: cosine >= 0.998 on 32 generated sounds, nearest-neighbour sets 99 % the same as float32's.
AGREEMENT = 0.995, 0.02


def available() -> bool:
    """Whether this CPU runs bfloat16 matrix products in hardware (AMX or AVX-512 BF16); elsewhere it is slower."""
    flags = cpu_flags()
    return {"amx_bf16", "amx_tile"} <= flags or "avx512_bf16" in flags


class Bfloat16Cnn14:
    """Callable on numpy input like the ONNX twin: batch (n, samples) -> (embeddings, class scores), float32."""

    def __init__(self, model):
        import torch

        self.model = model
        for i in range(1, 7):
            getattr(model, f"conv_block{i}").to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        model.fc1.to(torch.bfloat16)
        model.fc_audioset.to(torch.bfloat16)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            features = self.model.log_mel(torch.from_numpy(power_spectra(batch)))
            features = features.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            embedding, scores = self.model.classify(features)
            out = embedding.float().numpy(), scores.float().numpy()
        # torch's buffers for a batch are freed into the heap between the callers' long-lived outputs, and glibc
        # keeps the holes: measured, 1.4 MB more resident per batch (+0.6 GB over a 2-hour file); 0.1 ms to trim.
        return_freed_memory()
        return out


def load_bfloat16_cnn14(model) -> Bfloat16Cnn14 | None:
    """The bfloat16 twin of the float32 torch ``model`` (converted in place), or None with the reason logged
    when its answers on the probe drift further than ``AGREEMENT`` from the model's own."""
    expected = reference(model)
    twin = Bfloat16Cnn14(model)
    return_freed_memory()  # the float32 weights the conversion replaced: half the model's size
    problem = disagreement(expected, twin, *AGREEMENT)
    if problem:
        log.warning("Cnn14 in bfloat16 is too far from float32 on this checkpoint (%s); not using it", problem)
        return None
    return twin
