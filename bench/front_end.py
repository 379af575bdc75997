"""Cnn14's STFT before the ONNX graph (scipy's FFT, what audiosim runs) against inside it (torchlibrosa's two
1024-sample convolutions, as the graph held them before), in float32 and int8, in one process.

    .venv/bin/python bench/front_end.py
    .venv/bin/python bench/front_end.py --quick

Both graphs are exported from the same random-weight Cnn14 (speed does not depend on the weights), optimised by
ONNX Runtime for this CPU and, for int8, quantized the way audiosim quantizes (the in-graph STFT kept float32).
Each engine times a batch of --batch two-second windows --repeat times, the four taking turns so that a noisy
neighbour slows them alike; the ratio is the in-graph STFT's time over audiosim's, per batch, best and median.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report import machine, report  # noqa: E402

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

    from audiosim.embedders import int8, onnx_runtime
    from audiosim.embedders.cnn14 import Cnn14
    from audiosim.synth import KINDS, sound

    torch.manual_seed(0)
    model = Cnn14().eval()
    batch = np.stack([sound(KINDS[i % len(KINDS)], 2.0, seed=i) for i in range(args.batch)]).astype(np.float32)
    graphs = {
        "stft in the graph": (_export_from_waveform(model), lambda b: {"waveform": b}, STFT_CONVOLUTIONS),
        "stft before the graph": (_export_from_power(model, onnx_runtime), onnx_runtime.graph_input, ()),
    }
    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (plain, feed, also_float32) in graphs.items():
            for precision in ("float32", "int8"):
                graph = plain
                if precision == "int8":
                    quantized = os.path.join(scratch, "int8.onnx")
                    int8.quantize(plain, quantized, feed, int8.KEEP_FLOAT32 + also_float32)
                    graph = Path(quantized).read_bytes()
                optimised = os.path.join(scratch, f"{len(sessions)}.onnx")
                onnx_runtime._session(graph, 1, optimised_to=optimised)
                sessions[name, precision] = onnx_runtime._session(optimised), feed
        times = {key: [] for key in sessions}
        for session, feed in sessions.values():
            session.run(None, feed(batch))  # warm-up
        for _ in range(args.repeat):
            for key, (session, feed) in sessions.items():
                start = time.perf_counter()
                session.run(None, feed(batch))  # the feed counts: it is where scipy computes the STFT
                times[key].append(time.perf_counter() - start)

    results = []
    for precision in ("float32", "int8"):
        before, now = times["stft in the graph", precision], times["stft before the graph", precision]
        results.append(
            {
                "precision": precision,
                "stft_in_graph_ms": {"best": _ms(min(before)), "median": _ms(statistics.median(before))},
                "stft_before_graph_ms": {"best": _ms(min(now)), "median": _ms(statistics.median(now))},
                "speedup_best": round(min(before) / min(now), 2),
                "speedup_median": round(statistics.median(before) / statistics.median(now), 2),
            }
        )
    report(
        {
            "bench": "front_end",
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
