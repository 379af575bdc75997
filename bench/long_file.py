"""Peak memory while indexing one long recording with Cnn14, against the seed's first step on the same file.

    .venv/bin/python bench/long_file.py --panns-random              # a 2-hour FLAC, 44.1 kHz mono
    .venv/bin/python bench/long_file.py --panns-random --quick      # 2 minutes: a pipeline check

`audiosim index` streams the file in blocks, so its peak should not grow with the recording's length. The
baseline, measured in the same run on the same file, is the seed's first step alone: `librosa.load` at 32 kHz,
which holds the whole recording decoded (the seed then ran Cnn14 on all of it at once). Each is measured in its
own small process (Linux counts a forked child's pre-exec memory in its peak, so neither is forked from here
after the audio was generated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import add_model_arguments, panns_model_dir  # noqa: E402
from report import machine, report  # noqa: E402

from audiosim.settings import RUNTIMES  # noqa: E402

SR = 44_100
PEAK_OF_CHILD = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def peak_rss_mb(command: list[str]) -> tuple[int, float, list[str]]:
    """Run a command in a fresh process; its peak RSS in MB, its wall time and the lines it printed."""
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    *printed, peak = done.stdout.strip().splitlines()
    return round(int(peak) / 1024), time.perf_counter() - t, printed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=120)
    add_model_arguments(parser)
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 2

    from audiosim.synth import collage

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = panns_model_dir(args, tmp)
        path = tmp / "long.flac"
        with soundfile.SoundFile(path, "w", SR, 1, format="FLAC") as f:
            for minute in range(args.minutes):
                f.write(collage(60.0, seed=minute, sr=SR))
        audiosim = str(Path(sys.executable).with_name("audiosim"))

        def index(audio: Path, catalog: str) -> tuple[int, float, str]:
            """Peak RSS, wall time, and the engine that embedded, as the ingest bench names it."""
            mb, seconds, printed = peak_rss_mb(
                [audiosim, "index", str(audio), "--catalog", str(tmp / catalog), "--model", "panns-cnn14"]
                + ["--model-dir", str(model_dir), "--runtime", args.runtime, "--json"]
            )
            return mb, seconds, json.loads(printed[-1])["engine"]

        # The first use of a checkpoint on CPU may export its ONNX Runtime twin (once, kept beside it): measured
        # apart, on a one-second file, so that the long file measures indexing itself.
        short = tmp / "short.flac"
        soundfile.write(short, collage(1.0, seed=0, sr=SR), SR)
        first_use_mb, _, _ = index(short, "first-use.db")
        index_mb, index_s, engine = index(path, "c.db")
        seed_mb, _, _ = peak_rss_mb([sys.executable, "-c", f"import librosa; librosa.load({str(path)!r}, sr=32000)"])

    audio_s = args.minutes * 60
    result = {
        "bench": "long_file",
        "audio_s": audio_s,
        "source": f"FLAC, {SR} Hz mono",
        "runtime": args.runtime,
        "engine": engine,
        "index_peak_rss_mb": index_mb,
        "first_use_export_peak_rss_mb": first_use_mb,
        "index_s": round(index_s, 1),
        "x_realtime": round(audio_s / index_s, 1),
        "seed_librosa_load_peak_rss_mb": seed_mb,
        "seed_over_index_peak": round(seed_mb / index_mb, 2),
        "machine": machine(),
        "quick": args.quick,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
