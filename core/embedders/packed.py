"""Cnn14 on oneDNN's packed, fused kernels, in bfloat16 or float32: torch's own engine for CPUs, run leaner than
the model's eager modules.

bfloat16, on CPUs with bfloat16 matrix instructions: AMX tiles (Intel Xeon since Sapphire Rapids) or AVX-512 BF16
(AMD Zen 4 and Zen 5, Intel Cooper Lake). A batch of 16 two-second windows on 2 cores, measured:

    Xeon with AMX:        bfloat16 0.09 s (0.12 s with the last block convolved, 0.23-0.27 s before the fold and
                          packing below), int8 0.17-0.19 s,
                          ONNX Runtime float32 0.57 s (bench/export.py)
    EPYC Zen 4, BF16:     bfloat16 0.30 s (0.31 s with block 5's second convolution whole, 0.37 s with the
                          last block convolved too, 0.50-0.54 s before the fold and packing), int8 0.20 s,
                          ONNX Runtime float32 0.71-0.75 s, torch 0.96 s
    EPYC Zen 5, BF16:     bfloat16 0.13-0.15 s (full-width AVX-512: 450-540 GFLOPS a convolution on one core;
                          134 ms best with blocks 4 and 5 by Winograd, 149 ms convolved), int8 0.08 s

Without either, torch falls back to a reference convolution, about 7 s a batch (EPYC Zen 3, AVX2).

float32, on CPUs with AVX-512 or AVX2 but no bfloat16 instructions (Intel Skylake to Ice Lake Xeons, AMD Zen 1
to 3, most laptops): the same folding, packing and fusing, with no rounding beyond float32's. On a Xeon Cascade
Lake it beat ONNX Runtime's float32, until then the default there (figures in bench/export.py's results). On AVX2
it beats it with blocks 3 to 5 by Winograd's F(2x2, 3x3) (WINOGRAD_BINS); an EPYC Zen 3, a batch of 16 windows
on one core: 1.16 s against ONNX Runtime's 1.68-1.70 s (1.39-1.46 s convolved directly).

bench/ingest.py has the pipeline figures.

On AVX-512 BF16 without AMX, blocks 4 and 5 are computed by Winograd's F(2x2, 3x3), 2.25 times fewer products
(WINOGRAD_BINS): there oneDNN's convolutions already run at the units' peak, and fewer products were what was left.
The same holds for float32 on AVX2 (oneDNN's direct convolution of block 1 at about 81 GFLOPS on one Zen 3 core).

The front end stays float32: the log of a quiet sound's power needs float32's range and mantissa. Its STFT is
computed in numpy and scipy, as for ONNX Runtime (cnn14_stft.py), the log-mel and its batch norm in torch. The
convolutions, their batch norms folded in, run on channels-last tensors, the layout oneDNN maps onto AMX and
AVX-512; the dense layers after them in float32.
bfloat16 keeps 8 bits of mantissa, so embeddings move a little; each twin is used only when, on the probe batch,
it keeps the checkpoint's own float32 answers within its precision's ``AGREEMENT``.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from ..cpu import cpu_flags
from ..memory import map_large_blocks_apart, return_freed_memory
from .cnn14_stft import HOP_SIZE, power_spectra
from .probe import PROBE_SAMPLES, disagreement, reference

log = logging.getLogger(__name__)

# Per precision, the least embedding cosine and the most class-probability error a twin may show on the probe.
# bfloat16, measured on the tests' random-weight Cnn14 with calibrated batch norms, 32 generated sounds: cosine
# >= 0.9978 (mean 0.9992), class probabilities within 0.024 (mean 0.010). With the batch norms folded into the
# bfloat16 weights the largest score error went from 0.017 to 0.024 (mean 0.0091 to 0.0098): rounding w * scale
# instead of w. A random-weight model's probabilities sit near 0.5, where the sigmoid is steepest; the real
# checkpoint's mostly sit near 0. float32 only sums in another order, and is held to ONNX Runtime's float32 bound:
# measured, scores within 7.5e-5 of torch's on the tests' model, cosine above 0.99999.
AGREEMENT = {"bfloat16": (0.995, 0.03), "float32": (0.99999, 1e-3)}

# The shape oneDNN packs each convolution's weights for: a batch of two-second windows, as the indexer sends.
WINDOW_FRAMES = PROBE_SAMPLES // HOP_SIZE + 1  # the probe's window is the indexer's: 2 s at 32 kHz
PACKING_BATCH = 16
TRIM_EVERY = 8  # batches between handing freed heap pages back (see __call__)

# The most windows a twin runs through the network at once. float32's activations are twice bfloat16's, 52 MB for
# block 1's output at 16 windows, and the indexer runs a batch a core: indexing a 2-hour file peaked at 1.68 GB
# with whole batches of 16 on a Xeon Cascade Lake. Two halves of 8 took as long as the whole (1.32 s best for two
# batches at once, either way).
WINDOWS_AT_ONCE = {"bfloat16": None, "float32": 8}


def bfloat16_available() -> bool:
    """Whether this CPU runs bfloat16 matrix products in hardware (AMX or AVX-512 BF16); elsewhere it is slower."""
    return amx_available() or "avx512_bf16" in cpu_flags()


def amx_available() -> bool:
    """Whether this CPU has AMX's bfloat16 tiles (Intel Xeon since Sapphire Rapids)."""
    return {"amx_bf16", "amx_tile"} <= cpu_flags()


def winograd_preferred(precision: str) -> bool:
    """Whether the ``precision`` twin runs WINOGRAD_BINS' blocks by Winograd's F(2x2, 3x3). bfloat16: not on AMX,
    where oneDNN's convolution runs on the tiles and the transforms cost more than the products they save.
    float32: on AVX2 without AVX-512, where it was measured; with AVX-512 (a Xeon Cascade Lake) not measured yet."""
    if precision == "bfloat16":
        return not amx_available()
    return "avx512f" not in cpu_flags()


def float32_preferred() -> bool:
    """Whether ``auto`` should take the float32 twin: a CPU with AVX-512 or AVX2 and FMA but no bfloat16
    instructions, where it was measured faster than ONNX Runtime (on AVX2, an EPYC Zen 3, with blocks 3 to 5 by
    Winograd; convolved directly, on an EPYC family 23, it was no faster, 31.22 s against 31.23 s for the ingest
    bench's corpus)."""
    flags = cpu_flags()
    return ("avx512f" in flags or {"avx2", "fma"} <= flags) and not bfloat16_available()


class PackedCnn14:
    """Callable on numpy input like the ONNX twin: batch (n, samples) -> (embeddings, class scores), float32.

    Each convolution takes its batch norm folded into its weights and bias. Where oneDNN runs the precision fast,
    its weights are packed once into oneDNN's blocked layout, and the ReLU runs inside the convolution (oneDNN's
    fused convolution, the kernel torch.compile calls). torch's eager convolution re-packs the weights on every
    call and runs batch norm and ReLU as separate passes over the activations. Measured on a Xeon with AMX, a
    batch of 16 windows in bfloat16: 2.1 times faster per convolution, and batch norm and ReLU had taken a fifth
    of the batch. The narrowest blocks run as matrix products instead (MATRIX_BINS)."""

    def __init__(self, model, precision: str = "bfloat16"):
        import torch

        from .cnn14 import MEL_BINS, fold_batch_norm

        self.model = model
        self.precision = precision
        self.dtype = getattr(torch, precision)
        self.batches = 0  # network runs so far (a part of WINDOWS_AT_ONCE counts as one), for TRIM_EVERY
        fast = bfloat16_available() if precision == "bfloat16" else True
        self.packed = fast and _fused_convolution_available()
        self.winograd_bins = WINOGRAD_BINS[precision] if self.packed and winograd_preferred(precision) else ()
        self.blocks = []  # per block, its two convolutions: (how, weight, bias), run as how(x, weight, bias)
        frames, bins = WINDOW_FRAMES, MEL_BINS
        with torch.no_grad():
            for i in range(1, 7):
                block = getattr(model, f"conv_block{i}")
                layers = []
                for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
                    weight, bias = fold_batch_norm(conv, bn)
                    # Each float32 copy let go as soon as the next exists: block 6's weights are 151 MB in float32,
                    # and holding them all until the end raised the load's peak by 0.16 GB.
                    del conv.weight
                    layers.append(self._layer(weight, bias, [PACKING_BATCH, conv.in_channels, frames, bins]))
                self.blocks.append(layers)
                delattr(model, f"conv_block{i}")  # its batch norms: folded in above
                frames, bins = frames // 2, bins // 2
        # The dense layers stay float32: 5 million products a window, under a millisecond for a batch. In bfloat16
        # a batch of one window (oneDNN's matrix-vector kernel) rounded its embedding otherwise than the same
        # window among others: up to 0.004 apart, where a window's vector should not depend on its batch.
        if precision == "float32":  # its large activations (WINDOWS_AT_ONCE), mapped apart from the heap
            map_large_blocks_apart()

    def _layer(self, weight, bias, shape):
        """One convolution's weights in the form it runs in: (how, weight, bias)."""
        import torch

        bins = shape[3]
        if bins in self.winograd_bins:
            return _convolve_winograd_relu, _winograd_taps(weight, self.dtype), bias.to(self.dtype)
        if bins == LAST_BLOCK_BINS:
            return (_convolve_two_bins_relu, *_two_bin_matrix(weight, bias, self.dtype))
        if bins in MATRIX_BINS[self.precision]:
            return (_convolve_patches_relu, *_patch_matrix(weight, bias, self.dtype))
        weight = weight.to(dtype=self.dtype, memory_format=torch.channels_last)
        bias = bias.to(self.dtype)
        if not self.packed:
            return _convolve_eager_relu, weight, bias
        # The input's shape only guides the layout: any batch and length still run.
        pieces = SPLIT_OUTPUTS.get(self.precision) if shape[1] >= SPLIT_FROM_INPUTS else None
        if pieces:
            return _convolve_pieces_relu, tuple(_packed(w, shape) for w in weight.split(pieces)), bias.split(pieces)
        return _convolve_packed_relu, _packed(weight, shape), bias

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at_once = WINDOWS_AT_ONCE[self.precision]
        if at_once and len(batch) > at_once:
            parts = [self(batch[i : i + at_once]) for i in range(0, len(batch), at_once)]
            return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = self.model.log_mel(torch.from_numpy(power_spectra(batch)))
            x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
            for i, layers in enumerate(self.blocks):
                for how, weight, bias in layers:
                    x = how(x, weight, bias)
                if i < len(self.blocks) - 1:  # Cnn14 pools after every block but the last
                    x = F.avg_pool2d(x, kernel_size=2)
            embedding, scores = self.model.head(x.float())
            out = embedding.numpy(), scores.numpy()  # float32: the dense layers run in it
        # torch's buffers for a batch are freed into the heap between the callers' long-lived outputs, and glibc
        # keeps the holes: measured, 1.4 MB more resident per batch (+0.6 GB over a 2-hour file). Trimming is
        # 0.1 ms, but the next batch then faults its buffers' pages in afresh: trimmed after every batch, a batch
        # of 16 windows took 108-114 ms on a Xeon with AMX, 94-98 ms trimmed after every eighth, 98-100 never.
        self.batches += 1
        if self.batches % TRIM_EVERY == 0:
            return_freed_memory()
        return out


def _convolve_eager_relu(x, weight, bias):
    import torch.nn.functional as F

    return F.relu_(F.conv2d(x, weight, bias, padding=1))


def _convolve_packed_relu(x, weight, bias):
    import torch

    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")


def _convolve_pieces_relu(x, weights, biases):
    """A wide convolution's output channels in pieces (SPLIT_OUTPUTS), joined."""
    import torch

    pieces = [_convolve_packed_relu(x, w, b) for w, b in zip(weights, biases, strict=True)]
    return torch.cat(pieces, dim=1)


# oneDNN blocks a convolution's weights by its own rule of thumb, and for block 5's second convolution (1,024
# channels in and out, 12 frames by 4 bins a window) the AVX-512 BF16 kernel picks blocks of 16 output channels:
# 48-52 ms for a batch of 16 windows on an EPYC Zen 4. The same weights as four convolutions of 256 outputs each
# get blocks of 64 and take 28-30 ms, the same sums. Splitting no other convolution helped there. In float32 that
# block runs as a matrix product instead (MATRIX_BINS).
SPLIT_FROM_INPUTS, SPLIT_OUTPUTS = 1024, {"bfloat16": 256}


def _packed(weight, shape):
    """A convolution's weights packed once into oneDNN's blocked layout for inputs of ``shape``."""
    import torch

    return torch.ops.mkldnn._reorder_convolution_weight(weight, [1, 1], [1, 1], [1, 1], 1, shape)


# The last block sees 2 mel bins (64 halved by five poolings), where a 3x3 convolution's outer kernel column of
# each output bin meets only the zero padding. oneDNN's convolution spends as long on that shape as on one with
# spatial room to spare: block 6 took 41 % of a batch of 16 windows (53 ms of 128 on a Xeon with AMX). As one
# matrix product over the taps that meet real input, the same sums take 13-17 ms.
LAST_BLOCK_BINS = 2

# In float32, oneDNN's convolution also runs block 5 (4 bins, 12 frames a window) far below its speed elsewhere;
# a matrix product over each output's 3x3 patch does the same sums faster. On a Xeon Cascade Lake, 16 windows:
# the second convolution (1,024 channels in and out) 110-154 ms as a packed convolution, whole or in pieces of 64
# to 512 outputs, 67 ms as a matrix product; the first 42-56 ms against 36. Block 4 (8 bins) went the other way,
# 62 ms packed against 90.
MATRIX_BINS = {"bfloat16": (), "float32": (4,)}


def _patch_matrix(weight, bias, dtype):
    """A 3x3 convolution's (out, in, 3, 3) weights as one matrix (out, 9 * in), columns in the order of the
    patches _convolve_patches_relu makes (frame, bin, channel), and its bias."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1).to(dtype).contiguous(), bias.to(dtype)


def _convolve_patches_relu(x, matrix, bias):
    """The 3x3 convolution (padding 1) and ReLU of a channels-last (batch, in, frames, bins) map, as one matrix
    product over each output's patch: its 3 neighbouring frames by 3 neighbouring bins (zero beyond the edges)."""
    import torch
    import torch.nn.functional as F

    batch, channels, frames, bins = x.shape
    rows = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (batch, frames + 2, bins + 2, in)
    taps = [rows[:, i : i + frames, j : j + bins] for i in range(3) for j in range(3)]
    out = F.relu_(F.linear(torch.cat(taps, dim=3).reshape(batch * frames * bins, 9 * channels), matrix, bias))
    return out.view(batch, frames, bins, -1).permute(0, 3, 1, 2)  # channels-last (batch, out, frames, bins)


# Winograd's F(2x2, 3x3) (Lavin and Gray 2016) computes each 2x2 tile of outputs from its 4x4 tile of inputs in
# 16 products a pair of channels instead of 36: 2.25 times fewer. On AVX-512 BF16, where oneDNN's convolution
# already runs at the units' peak (an EPYC Zen 5), fewer products are the way left to fewer cycles, and they pay
# where the transformed tiles stay small: blocks 4 and 5 (8 and 4 bins). On one core, a batch of 16 windows, per
# block's two convolutions: block 4 42 -> 30 ms, block 5 52 -> 27 ms. In bench/ingest.py, a batch a core, the
# best of each of three runs: the model alone 2.00-2.17 s for the corpus against 2.30-2.43 s convolved directly,
# the pipeline 2.25-2.39 s against 2.55-2.62 (bench/results/ingest-winograd-zen5.json against
# ingest-direct-zen5.json, run one after the other: 1.16 times the clips a second). Block 3 too (16 bins, 13 MB
# of transformed tiles a batch) was faster alone on one core, but no faster with both cores indexing; blocks 1
# and 2 were slower (26-52 MB of tiles), block 6 no faster than its two-bin product. The transformed tiles are
# rounded to bfloat16, which doubles a convolution's own error (0.0045 of its output's norm against 0.0023), not
# the network's: probe cosine 0.99778 against 0.99770 convolved directly, on the tests' calibrated model.
# Not on AMX, where oneDNN's convolution runs on the tiles: there the whole twin took 172 ms best (180 median) a
# batch of 16 windows on one core with blocks 4 and 5 by Winograd, against 163 (167) convolved directly (12 turns
# each, taking turns, on a Xeon with AMX).
# float32 on AVX2 (an EPYC Zen 3), one core, a batch of 16 windows, the best of 6 to 8 runs: the whole twin 1.39-1.46 s
# convolved directly (block 5 as patches), 1.37 s with block 4 by Winograd, 1.21 s with blocks 4 and 5, 1.14-1.19 s
# with blocks 3 to 5, 1.17 s with blocks 2 to 5, 1.28 s with blocks 1 to 5 (their 64 and 128 channels make the
# transforms' share large). Block 6 stays its two-bin product: by Winograd it took 151 ms against 202 (timed layer by
# layer) but the whole twin no less (1.14 s best, 1.23 median, either way), and its 16 taps a pair of channels,
# against the product's 12, are 100 MB more in float32: a 2-hour file peaked at 1495 MB with it, 1361 without. In
# bench/ingest.py, a batch a core: the pipeline 13.06 s for the corpus against ONNX Runtime's 16.86 s, the model
# alone 12.77 s against 16.02 (bench/results/ingest-zen3-float32.json). With AVX-512 (a Xeon Cascade Lake)
# float32 is not measured by Winograd yet, and stays convolved directly there (winograd_preferred).
WINOGRAD_BINS = {"bfloat16": (8, 4), "float32": (16, 8, 4)}

# The tiles transformed at once, in whole windows: a batch of 16 windows at block 4 is 832 tiles, whose
# transformed tiles and products came to 27 MB a core at once; indexing a 2-hour file then peaked at 1508 MB
# (bench/all.py on an EPYC Zen 5). 128 tiles (block 4 two windows at a time, block 5 ten) peaked at 1436 MB, the
# same as convolved directly in the same session, and indexed as fast (the pipeline 2.28 s for the ingest corpus;
# 256 tiles: 1467 MB and 2.34 s).
TILES_AT_ONCE = 128

# F(2x2, 3x3)'s transforms: input tile (B^T d B), taps (G g G^T), products back to outputs (A^T m A).
_INPUT_TRANSFORM = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_TAP_TRANSFORM = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
_OUTPUT_TRANSFORM = ((1, 1, 1, 0), (0, 1, -1, -1))


@functools.cache
def _tile_transforms(dtype):
    """F(2x2, 3x3)'s transforms over a tile's 16 positions as matrices, made once per dtype: into (16, 16), from
    the 4x4 input tile to its 16 transformed values, and back (4, 16), from the 16 products to the 2x2 outputs."""
    import torch

    into, back = (torch.tensor(transform, dtype=dtype) for transform in (_INPUT_TRANSFORM, _OUTPUT_TRANSFORM))
    return torch.kron(into, into), torch.kron(back, back)


def _winograd_taps(weight, dtype):
    """A 3x3 convolution's (out, in, 3, 3) weights as Winograd's 16 (in, out) matrices, one per tile position."""
    import torch

    g = torch.tensor(_TAP_TRANSFORM, dtype=weight.dtype)
    taps = torch.einsum("ak,oikl,bl->abio", g, weight, g)  # (4, 4, in, out)
    return taps.reshape(16, weight.shape[1], weight.shape[0]).to(dtype).contiguous()


def _convolve_winograd_relu(x, taps, bias):
    """_winograd_relu over as many windows at a time as make TILES_AT_ONCE tiles."""
    import torch

    batch, _, frames, bins = x.shape
    at_once = max(1, TILES_AT_ONCE // (((frames + 1) // 2) * ((bins + 1) // 2)))
    if batch <= at_once:
        return _winograd_relu(x, taps, bias)
    return torch.cat([_winograd_relu(x[i : i + at_once], taps, bias) for i in range(0, batch, at_once)])


def _winograd_relu(x, taps, bias):
    """The 3x3 convolution (padding 1) and ReLU of a channels-last (batch, in, frames, bins) map by Winograd's
    F(2x2, 3x3): the input's overlapping 4x4 tiles (stride 2) transformed, 16 matrix products, each tile's
    products transformed back into its 2x2 outputs. Each transform is one matrix product over the tile's
    positions: a pass over the tiles in oneDNN, where the same sums as 16 elementwise passes were slower."""
    import torch
    import torch.nn.functional as F

    batch, channels, frames, bins = x.shape
    down, across = (frames + 1) // 2, (bins + 1) // 2  # tiles
    # One zero row and column before, and enough after for whole tiles: (batch, 2 down + 2, 2 across + 2, in).
    rows = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 2 * across + 1 - bins, 1, 2 * down + 1 - frames))
    s = rows.stride()
    tiles = rows.as_strided((4, 4, batch, down, across, channels), (s[1], s[2], s[0], 2 * s[1], 2 * s[2], s[3]))
    into, back = _tile_transforms(x.dtype)
    transformed = (into @ tiles.reshape(16, -1)).view(16, -1, channels)
    products = torch.bmm(transformed, taps)  # (16, tiles, out)
    out = (back @ products.view(16, -1)).view(2, 2, batch, down, across, -1)
    out = out.permute(2, 3, 0, 4, 1, 5).reshape(batch, 2 * down, 2 * across, -1)[:, :frames, :bins]
    # Adding the bias keeps its input's strides, which a map of a single tile's height or width leaves a view's.
    out = F.relu_(out + bias).contiguous()
    return out.permute(0, 3, 1, 2)  # channels-last (batch, out, frames, bins)


def _two_bin_matrix(weight, bias, dtype):
    """A 3x3 convolution's (out, in, 3, 3) weights, for an input 2 bins wide, as one matrix (2 * out, 6 * in) and
    bias: row block b holds output bin b's taps, columns in the order of the patches _convolve_two_bins_relu makes
    (frame, bin, channel). Output bin 0 meets input bins 0 and 1 with kernel columns 1 and 2; output bin 1, with
    columns 0 and 1."""
    import torch

    out, inputs = weight.shape[:2]
    # Filled in place from views of the float32 weights: block 6's second convolution holds 151 MB of them, and
    # gathering each bin's copy in float32 first, then joining them, raised the twin's load peak by 0.3 GB.
    matrix = torch.empty(2, out, 3, 2, inputs, dtype=dtype)
    for output_bin, columns in enumerate((slice(1, 3), slice(0, 2))):
        matrix[output_bin].copy_(weight[:, :, :, columns].permute(0, 2, 3, 1))
    return matrix.view(2 * out, 6 * inputs), torch.cat([bias, bias]).to(dtype)


def _convolve_two_bins_relu(x, matrix, bias):
    """The 3x3 convolution (padding 1) and ReLU of a channels-last (batch, in, frames, 2) map, as one matrix
    product: each output frame's patch is its 3 neighbouring frames (zero beyond the ends) by 2 bins by in."""
    import torch
    import torch.nn.functional as F

    batch, channels, frames, bins = x.shape
    rows = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, 0, 1, 1))  # (batch, frames + 2, bins, in), one zero frame each end
    patches = torch.cat([rows[:, k : k + frames] for k in range(3)], dim=2).reshape(batch * frames, 3 * bins * channels)
    out = F.relu_(F.linear(patches, matrix, bias))
    return out.view(batch, frames, bins, -1).permute(0, 3, 1, 2)  # channels-last (batch, out, frames, bins)


def _fused_convolution_available() -> bool:
    """Whether this torch has oneDNN's packed-weight convolution with a fused ReLU (torch.compile's CPU kernel)."""
    import torch

    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_convolution_weight")
        and hasattr(ops, "_convolution_pointwise")
    )


def load_packed_cnn14(model, precision: str) -> PackedCnn14 | None:
    """The ``precision`` twin of the float32 torch ``model`` (converted in place), or None with the reason logged
    when it cannot run here or its answers on the probe drift further than ``AGREEMENT`` from the model's own."""
    expected = reference(model)
    try:
        twin = PackedCnn14(model, precision)
        return_freed_memory()  # the float32 weights the conversion replaced: in bfloat16, half the model's size
        problem = disagreement(expected, twin, *AGREEMENT[precision])
    except RuntimeError as e:  # oneDNN refusing a kernel, or a torch whose private kernel has changed
        log.warning("Cnn14 cannot run in %s here (%s: %s); not using it", precision, type(e).__name__, e)
        return None
    if problem:
        log.warning("Cnn14 in %s is too far from float32 on this checkpoint (%s); not using it", precision, problem)
        return None
    return twin
