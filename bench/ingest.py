"""Ingest throughput per embedder on a generated corpus, against the model alone on pre-decoded windows.

    .venv/bin/python bench/ingest.py                       # every usable model (panns needs a checkpoint)
    .venv/bin/python bench/ingest.py --models dsp-logmel aisfx --clips 60
    .venv/bin/python bench/ingest.py --panns-random        # measure Cnn14 with a random-weight checkpoint
    .venv/bin/python bench/ingest.py --quick

The corpus mixes lengths (1-10 s) and formats (wav, flac, mp3). "ceiling" is the embedder alone on the same
windows, already decoded and resampled, in batches: the pipeline's upper bound, measured in the same run.
Speed does not depend on the weights, so a random-weight Cnn14 measures PANNs honestly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def make_corpus(folder: Path, clips: int) -> float:
    from audiosim.synth import KINDS, sound, write

    rng = np.random.default_rng(0)
    total = 0.0
    formats = [("wav", {}), ("flac", {}), ("mp3", {"format": "MP3"})]
    for i in range(clips):
        seconds = float(rng.uniform(1, 10))
        ext, kwargs = formats[i % len(formats)]
        write(folder / f"{i:04d}.{ext}", sound(KINDS[i % len(KINDS)], seconds, seed=i), 44100, **kwargs)
        total += seconds
    return total


def random_panns_dir(folder: Path) -> Path:
    import torch

    from audiosim.embedders.cnn14 import Cnn14

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": Cnn14().state_dict()}, folder / "Cnn14_mAP=0.431.pth")
    return folder


def ceiling(embedder, files) -> float:
    """Seconds the embedder alone needs for every window of these files, decoded beforehand."""
    from audiosim.decode import read_blocks
    from audiosim.segments import cut_windows

    windows = [
        w.samples
        for f in files
        for w in cut_windows(
            read_blocks(f, embedder.sample_rate), embedder.sample_rate, embedder.window_s, embedder.hop_s
        )
    ]
    embedder.embed(windows[: embedder.batch_size])  # warm-up: weights load, first-call costs
    t = time.perf_counter()
    embedder.embed(windows)
    return time.perf_counter() - t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--panns-random", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips = 6

    from audiosim import Settings
    from audiosim.models import model_statuses
    from audiosim.service import AudioSim

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = random_panns_dir(tmp / "models") if args.panns_random else Path.home() / "panns_data"
        audio_s = make_corpus(tmp / "corpus", args.clips)
        files = sorted((tmp / "corpus").iterdir())
        usable = [s.name for s in model_statuses(model_dir) if s.usable]
        for name in args.models or usable:
            settings = Settings(str(tmp / f"{name}.db"), model=name, model_dir=model_dir)
            with AudioSim(settings) as sim:
                sim.collection()
                sim.embedder.embed([np.zeros(sim.embedder.window_samples, np.float32)])  # load the weights first
                t = time.perf_counter()
                report = sim.index([tmp / "corpus"])
                pipeline_s = time.perf_counter() - t
                model_s = ceiling(sim.embedder, files)
            results.append(
                {
                    "model": name,
                    "clips": len(report.indexed),
                    "audio_s": round(audio_s, 1),
                    "pipeline_s": round(pipeline_s, 2),
                    "clips_per_s": round(len(report.indexed) / pipeline_s, 2),
                    "x_realtime": round(audio_s / pipeline_s, 1),
                    "ceiling_s": round(model_s, 2),
                    "pipeline_over_ceiling": round(model_s / pipeline_s, 3),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    summary = {
        "bench": "ingest",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "results": results,
        "quick": args.quick,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
