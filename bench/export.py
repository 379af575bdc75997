"""What each choice in audiosim's ONNX export buys, timed in one process: Cnn14's STFT before the graph (scipy's FFT)
against inside it (torchlibrosa's two 1024-sample convolutions, as the graph held them before), in float32 and
int8; and, in int8, blocks 5 and 6 convolved without their padding's zero columns (cnn14.ConvBlock), then the
activations kept 8-bit between the convolutions (int8.QUANTIZED_OPS) instead of only the convolutions quantized,
then each 2x2 average pool as a depthwise convolution (onnx_runtime.INT8_BLOCKS), then block 1's float32
convolution left out of ONNX Runtime's blocked layout (onnx_runtime.OPTIMIZERS_LEFT_OUT). In float32 also torch on
oneDNN's packed, fused convolutions (packed.PackedCnn14): every block but the last convolved, against block 5 as
matrix products too (as audiosim runs it with AVX-512), and blocks 3 to 5 by Winograd's F(2x2, 3x3) (as audiosim
runs it on AVX2 without AVX-512). Where the CPU has bfloat16 instructions (AMX, AVX-512 BF16), the
bfloat16 twin too: torch's eager convolutions, batch norm and ReLU apart (as it ran first), against the batch norms
folded in and oneDNN's packed, fused convolutions for every block (as it ran next), then the last block's
convolutions, which see 2 mel bins, as one matrix product each, and then block 5's second convolution as four of
256 outputs each (as audiosim runs it on AMX), and blocks 4 and 5 by Winograd's F(2x2, 3x3) instead (as audiosim
runs it on AVX-512 BF16 without AMX; timed on AMX too, where it is slower).

    .venv/bin/python bench/export.py
    .venv/bin/python bench/export.py --quick

Every graph is exported from the same random-weight Cnn14 (speed does not depend on the weights), optimised by
ONNX Runtime for this CPU and, for int8, quantized the way audiosim quantizes (an in-graph STFT kept float32).
Each times a batch of --batch two-second windows --repeat times, all taking turns so that a noisy neighbour
slows them alike. Each precision's first variant is the baseline: the ratio is its time over the variant's,
best and median.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import machine, report  # noqa: E402

UNBLOCKED = "the same, block 1's float32 convolution unblocked (audiosim)"
STFT_CONVOLUTIONS = ("/spectrogram_extractor/conv_real/Conv", "/spectrogram_extractor/conv_imag/Conv")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeat = 2, 2

    import numpy as np
    import torch

    from audiosim.embedders import int8, onnx_runtime, packed
    from audiosim.embedders.cnn14 import Cnn14
    from audiosim.synth import KINDS, sound

    torch.manual_seed(0)
    model = Cnn14().eval()
    batch = np.stack([sound(KINDS[i % len(KINDS)], 2.0, seed=i) for i in range(args.batch)]).astype(np.float32)
    from_waveform, from_power = _export_from_waveform(model), _export_from_power(model, onnx_runtime)
    waveform = lambda b: {"waveform": b}  # noqa: E731
    with onnx_runtime._blocks_shaped(model, onnx_runtime.NARROW_CONVOLUTIONS_UNPADDED):
        unpadded = _export_from_power(model, onnx_runtime)
    with onnx_runtime._blocks_shaped(model, onnx_runtime.INT8_BLOCKS):
        pooled_by_convolution = _export_from_power(model, onnx_runtime)
    power = onnx_runtime.graph_input
    convolutions = ("Conv",)
    # (precision, variant, plain graph, its feed, what else stays float32, ops quantized, optimised as): each
    # optimised as audiosim optimises it, the last int8 graph leaving out onnx_runtime.OPTIMIZERS_LEFT_OUT.
    variants = [
        ("float32", "STFT in the graph", from_waveform, waveform, (), (), "float32"),
        ("float32", "STFT before the graph (audiosim)", from_power, power, (), (), "float32"),
        ("int8", "STFT in the graph", from_waveform, waveform, STFT_CONVOLUTIONS, convolutions, "float32"),
        ("int8", "STFT before the graph", from_power, power, (), convolutions, "float32"),
        ("int8", "STFT before, narrow convolutions unpadded", unpadded, power, (), convolutions, "float32"),
        ("int8", "the same, activations 8-bit throughout", unpadded, power, (), int8.QUANTIZED_OPS, "float32"),
        (
            "int8",
            "the same, pools as depthwise convolutions",
            pooled_by_convolution,
            power,
            (),
            int8.QUANTIZED_OPS,
            "float32",
        ),
        ("int8", UNBLOCKED, pooled_by_convolution, power, (), int8.QUANTIZED_OPS, "int8"),
    ]
    runs = {}  # (precision, variant) -> a batch's run
    # The last int8 graph and what it was quantized from: the next variant may differ only in how it is optimised.
    last_quantized = None, b""
    with tempfile.TemporaryDirectory() as scratch:
        for precision, variant, plain, feed, also_float32, quantized_ops, optimised_as in variants:
            graph = plain
            if precision == "int8":
                key = id(plain), also_float32, quantized_ops
                if last_quantized[0] != key:
                    quantized = os.path.join(scratch, "int8.onnx")
                    int8.quantize(plain, quantized, feed, int8.KEEP_FLOAT32 + also_float32, quantized_ops)
                    last_quantized = key, Path(quantized).read_bytes()
                graph = last_quantized[1]
            optimised = os.path.join(scratch, f"{len(runs)}.onnx")
            onnx_runtime._session(graph, 1, optimised_to=optimised, precision=optimised_as)
            session = onnx_runtime._session(optimised)
            # The feed counts: it is where scipy computes the STFT.
            runs[precision, variant] = lambda b, session=session, feed=feed: session.run(None, feed(b))
        # audiosim's float32 twin gives every large block its own mapping (memory.map_large_blocks_apart, for a
        # 2-hour file's peak): a setting of the whole process, which slowed every torch variant timed after it
        # (on an EPYC Zen 5, the bfloat16 twin 183 ms a batch against 140, its Winograd blocks 240 against 119).
        # Here the float32 twins leave malloc as it is, so the bfloat16 twins run as they do in audiosim.
        heap = {"map_large_blocks_apart": lambda: None}
        direct = {"winograd_preferred": lambda precision: False, **heap}
        runs["float32", "torch, packed and fused, block 5 convolved"] = _twin_with(
            packed, copy.deepcopy(model), {"MATRIX_BINS": {"float32": ()}, **direct}, "float32"
        )
        runs["float32", "the same, block 5 as matrix products (audiosim's float32 twin with AVX-512)"] = _twin_with(
            packed, copy.deepcopy(model), direct, "float32"
        )
        # Timed with AVX-512 too, where audiosim does not take it yet (packed.winograd_preferred).
        runs["float32", "the same, blocks 3 to 5 by Winograd's F(2x2, 3x3) (audiosim's float32 twin on AVX2)"] = (
            _twin_with(packed, copy.deepcopy(model), {"winograd_preferred": lambda precision: True, **heap}, "float32")
        )
        if packed.bfloat16_available():  # elsewhere torch's bfloat16 convolution is a slow reference loop
            runs["bfloat16", "eager: batch norm and ReLU apart"] = _eager_bfloat16(copy.deepcopy(model))
            # The twin as it ran before each later change. LAST_BLOCK_BINS None matches no block, so every block
            # is convolved; SPLIT_FROM_INPUTS above any convolution's inputs leaves each convolution whole.
            whole = {"SPLIT_FROM_INPUTS": float("inf")}
            every_block_convolved = {"LAST_BLOCK_BINS": None, **whole}
            runs["bfloat16", "folded, packed and fused, every convolution whole"] = _twin_with(
                packed, copy.deepcopy(model), every_block_convolved
            )
            last_block_product = _twin_with(packed, copy.deepcopy(model), whole)
            runs["bfloat16", "the same, last block one matrix product"] = last_block_product
            pieces = "the same, block 5's second convolution in pieces (audiosim on AMX)"
            runs["bfloat16", pieces] = _twin_with(packed, copy.deepcopy(model), {"WINOGRAD_BINS": {"bfloat16": ()}})
            # Timed on AMX too, where audiosim does not take it: slower there (packed.winograd_preferred).
            winograd = "the same, blocks 4 and 5 by Winograd's F(2x2, 3x3) (audiosim on AVX-512 BF16)"
            preferred = {"winograd_preferred": lambda precision: True}
            runs["bfloat16", winograd] = _twin_with(packed, copy.deepcopy(model), preferred)
        precisions = ("float32", "int8", "bfloat16")  # each precision's rows together, its baseline first
        runs = dict(sorted(runs.items(), key=lambda run: precisions.index(run[0][0])))
        times = {key: [] for key in runs}
        for run in runs.values():
            run(batch)  # warm-up
        for _ in range(args.repeat):
            for key, run in runs.items():
                start = time.perf_counter()
                run(batch)
                times[key].append(time.perf_counter() - start)

    results, baselines = [], {}
    for (precision, variant), taken in times.items():
        best, median = min(taken), statistics.median(taken)
        baseline = baselines.setdefault(precision, (best, median))
        results.append(
            {
                "precision": precision,
                "variant": variant,
                "best_ms": _ms(best),
                "median_ms": _ms(median),
                "speedup_best": round(baseline[0] / best, 2),
                "speedup_median": round(baseline[1] / median, 2),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    report(
        {
            "bench": "export",
            "machine": machine(),
            "batch": args.batch,
            "repeat": args.repeat,
            "results": results,
            "quick": args.quick,
        },
        args.out,
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _eager_bfloat16(model):
    """The bfloat16 twin as audiosim ran it before: the model's own eager modules in bfloat16, channels last."""
    import torch

    from audiosim.embedders.cnn14_stft import power_spectra

    for i in range(1, 7):
        getattr(model, f"conv_block{i}").to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    model.fc1.to(torch.bfloat16)
    model.fc_audioset.to(torch.bfloat16)

    def run(batch):
        with torch.inference_mode():
            features = model.log_mel(torch.from_numpy(power_spectra(batch)))
            return model.classify(features.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))

    return run


def _twin_with(packed, model, settings, precision="bfloat16"):
    """A packed twin built with some of its module's settings changed for the length of the constructor, which
    keeps bench-only switches out of its signature."""
    saved = {name: getattr(packed, name) for name in settings}
    for name, value in settings.items():
        setattr(packed, name, value)
    try:
        return packed.PackedCnn14(model, precision)
    finally:
        for name, value in saved.items():
            setattr(packed, name, value)


def _export_from_waveform(model) -> bytes:
    """The graph as audiosim exported it before: from the waveform, the STFT's convolutions inside."""
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 64000),),
            buffer,
            input_names=["waveform"],
            output_names=["embedding", "scores"],
            dynamic_axes={"waveform": {0: "batch", 1: "samples"}, "embedding": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def _export_from_power(model, onnx_runtime) -> bytes:
    buffer = io.BytesIO()
    onnx_runtime._export(model, buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
