"""Ingest throughput per embedder on a generated corpus, against the model alone on pre-decoded windows.

    .venv/bin/python bench/ingest.py                       # every usable model (panns needs a checkpoint)
    .venv/bin/python bench/ingest.py --models dsp-logmel aisfx --clips 60
    .venv/bin/python bench/ingest.py --panns-random        # measure Cnn14 with a random-weight checkpoint
    .venv/bin/python bench/ingest.py --panns-random --hop 2 --models panns-cnn14   # each second embedded once
    .venv/bin/python bench/ingest.py --panns-random --models panns-cnn14 --runtimes bfloat16   # one engine
    .venv/bin/python bench/ingest.py --quick

The corpus mixes lengths (1-10 s) and formats (wav, flac, mp3). "ceiling" is the embedder alone on the same
windows, already decoded and resampled, in batches: the pipeline's upper bound, measured in the same run.
Each measurement runs --repeat times (3) and the fastest run counts, the same rule for every line and the
seed loop: this 2-core machine is shared, and one batch of Cnn14 varies by a third from run to run.
Speed does not depend on the weights, so a random-weight Cnn14 measures PANNs honestly. Cnn14 is measured on
every engine: bfloat16 (the CPU default where the CPU has AMX or AVX-512 BF16), float32 on oneDNN's packed
kernels (the default where it has AVX-512 or AVX2 without them), ONNX Runtime (the default elsewhere), int8 and
torch eager; --quick, a pipeline check, runs it on the CPU default alone.

"seed loop" is the project's starting point, measured on the same files in the same run: per file,
librosa.load at 32 kHz, a freshly built and loaded Cnn14 (built as the seed built it, see seed_cnn14), one
insert into Milvus Lite and one autocommitted row into MySQL (SQLite when no MySQL answers at --mysql). The seed
embeds each clip once, whole; audiosim's default embeds 2 s windows every second, about twice the model work.
--hop 2 (audiosim index --hop 2) embeds each second once, the seed's amount of model work.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from report import machine  # bench/ is the script's own folder, first on sys.path

CORPUS_RATE = 44100
CORES = len(os.sched_getaffinity(0))  # the cores this process may run on


def make_corpus(folder: Path, clips: int) -> float:
    from audiosim.synth import KINDS, sound, write

    rng = np.random.default_rng(0)
    total = 0.0
    formats = [("wav", {}), ("flac", {}), ("mp3", {"format": "MP3"})]
    for i in range(clips):
        audio = sound(KINDS[i % len(KINDS)], float(rng.uniform(1, 10)), seed=i, sr=CORPUS_RATE)
        ext, kwargs = formats[i % len(formats)]
        write(folder / f"{i:04d}.{ext}", audio, CORPUS_RATE, **kwargs)
        total += len(audio) / CORPUS_RATE
    return total


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--panns-random", action="store_true", help="Cnn14 with random weights: the same speed")
    parser.add_argument(
        "--model-dir",
        help="Cnn14's checkpoint folder, where its exported graphs are cached too (bench/all.py shares one between "
        "benches); --panns-random writes its checkpoint there if none is. Default: ~/panns_data, or with "
        "--panns-random a fresh folder",
    )


def panns_model_dir(args, scratch: Path) -> Path:
    """The folder the bench loads Cnn14 from, as add_model_arguments's options say."""
    from audiosim.embedders.panns import PannsCnn14

    if args.model_dir:
        folder = Path(args.model_dir)
    else:
        folder = scratch / "models" if args.panns_random else Path.home() / "panns_data"
    if args.panns_random and not (folder / PannsCnn14.checkpoint.filename).exists():
        import torch

        from audiosim.embedders.cnn14 import Cnn14

        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": Cnn14().state_dict()}, folder / PannsCnn14.checkpoint.filename)
    return folder


def ceiling(embedder, files) -> tuple[float, float]:
    """Seconds the embedder alone needs for every window of these files, decoded beforehand, and the CPU seconds
    the process spent meanwhile (every thread's)."""
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
    t, cpu = time.perf_counter(), time.process_time()
    embedder.embed(windows)
    return time.perf_counter() - t, time.process_time() - cpu


def seed_cnn14(path: Path):
    """Cnn14 built and loaded as the seed's load_cnn14 did (e80e08e): on the CPU, every layer given its default
    random initialisation, torchlibrosa's front end (its filters filled through librosa), then the checkpoint
    copied in. Until 2026-11-29 the seed loop called audiosim's own load_cnn14, which has since built the model
    without weights of its own (cb7b016) and its front end without librosa (0384c81): our own changes made the
    baseline faster. Measured on an EPYC Zen 3, one build and load: 908 ms this way, 195 ms audiosim's."""
    import torch

    from audiosim.embedders.cnn14 import FMAX, FMIN, MEL_BINS, Cnn14
    from audiosim.embedders.cnn14_stft import HOP_SIZE, SAMPLE_RATE, WINDOW_SIZE

    class SeedCnn14(Cnn14):
        def _build_front_end(self):
            from torchlibrosa.stft import LogmelFilterBank, Spectrogram

            self.spectrogram_extractor = Spectrogram(
                n_fft=WINDOW_SIZE, hop_length=HOP_SIZE, win_length=WINDOW_SIZE, window="hann", center=True,
                pad_mode="reflect", freeze_parameters=True,
            )  # fmt: skip
            self.logmel_extractor = LogmelFilterBank(
                sr=SAMPLE_RATE, n_fft=WINDOW_SIZE, n_mels=MEL_BINS, fmin=FMIN, fmax=FMAX, ref=1.0, amin=1e-10,
                top_db=None, freeze_parameters=True,
            )  # fmt: skip

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = SeedCnn14()
    model.load_state_dict(state.get("model", state), strict=True)
    return model.eval()


def seed_loop(files, model_dir: Path, folder: Path, mysql_url: str) -> dict:
    """The seed's per-file loop, timed over ``files``."""
    import librosa
    import torch
    from pymilvus import MilvusClient

    client = MilvusClient(str(folder / "seed-vectors.db"))
    if client.has_collection("seed"):  # an earlier repeat's
        client.drop_collection("seed")
    client.create_collection("seed", dimension=2048, metric_type="COSINE", auto_id=True)
    try:
        import pymysql

        from audiosim.catalog_mysql import parse_mysql_url

        db = pymysql.connect(**parse_mysql_url(mysql_url), autocommit=True)
        catalog = "mysql"
    except Exception:
        import sqlite3

        db, catalog = sqlite3.connect(folder / "seed.db", isolation_level=None), "sqlite"
    cursor = db.cursor()
    cursor.execute("DROP TABLE IF EXISTS audiosim_bench_seed")
    cursor.execute("CREATE TABLE audiosim_bench_seed (id INTEGER PRIMARY KEY, path TEXT, duration REAL)")
    mark = "%s" if catalog == "mysql" else "?"
    t = time.perf_counter()
    for i, path in enumerate(files):
        audio, _ = librosa.load(str(path), sr=32000, mono=True)
        model = seed_cnn14(model_dir / "Cnn14_mAP=0.431.pth")
        with torch.inference_mode():
            embedding, _ = model(torch.from_numpy(audio[None, :]))
        client.insert("seed", [{"vector": embedding[0].numpy().tolist()}])
        cursor.execute(
            f"INSERT INTO audiosim_bench_seed VALUES ({mark}, {mark}, {mark})", [i, str(path), len(audio) / 32000]
        )
    elapsed = time.perf_counter() - t
    cursor.execute("DROP TABLE audiosim_bench_seed")
    db.close()
    client.close()
    return {
        "files": len(files),
        "seconds": round(elapsed, 2),
        "clips_per_s": round(len(files) / elapsed, 3),
        "catalog": catalog,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--clips", type=int, default=48)
    add_model_arguments(parser)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed-files", type=int, default=12, help="files the (slow) seed loop is timed on")
    parser.add_argument("--mysql", default="mysql://root:@127.0.0.1:3306/test", help="the seed loop's catalog")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest counts")
    parser.add_argument("--runtimes", nargs="*", help="Cnn14's engines to measure (default: every one this CPU runs)")
    parser.add_argument("--hop", type=float, help="seconds between windows (audiosim index --hop); default: 1")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.clips, args.seed_files, args.repeat = 6, 2, 1

    from audiosim import Settings
    from audiosim.embedders.panns import cpu_runtimes
    from audiosim.models import model_statuses
    from audiosim.service import AudioSim

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = panns_model_dir(args, tmp)
        audio_s = make_corpus(tmp / "corpus", args.clips)
        files = sorted((tmp / "corpus").iterdir())
        usable = [s.name for s in model_statuses(model_dir) if s.usable]
        # --quick checks the steps, and every engine takes the same ones: Cnn14 runs on the CPU default alone,
        # without int8's one-time quantization (34 s of a 106 s quick run on an EPYC Zen 3).
        engines = ("auto",) if args.quick else args.runtimes or cpu_runtimes()
        runs = [
            (name, runtime)
            for name in args.models or usable
            for runtime in (engines if name == "panns-cnn14" else ("auto",))
        ]
        seed = None
        if "panns-cnn14" in (args.models or usable):
            runs_of_seed = [seed_loop(files[: args.seed_files], model_dir, tmp, args.mysql) for _ in range(args.repeat)]
            seed = min(runs_of_seed, key=lambda run: run["seconds"])
            seed["runs_s"] = [run["seconds"] for run in runs_of_seed]
            print(json.dumps({"seed_loop": seed}), flush=True)
        for name, runtime in runs:
            pipeline_runs, ceiling_runs = [], []
            for run in range(args.repeat):
                settings = Settings(
                    str(tmp / f"{name}-{runtime}-{run}.db"),
                    model=name,
                    model_dir=model_dir,
                    runtime=runtime,
                    hop_s=args.hop,
                )
                with AudioSim(settings) as sim:
                    sim.collection()
                    sim.embedder.embed([np.zeros(sim.embedder.window_samples, np.float32)])  # load the weights
                    t, cpu = time.perf_counter(), time.process_time()
                    report = sim.index([tmp / "corpus"])
                    pipeline_runs.append((time.perf_counter() - t, time.process_time() - cpu))
                    ceiling_runs.append(ceiling(sim.embedder, files))
            (pipeline_s, pipeline_cpu), (model_s, model_cpu) = min(pipeline_runs), min(ceiling_runs)
            results.append(
                {
                    "model": name,
                    "engine": getattr(sim.embedder, "engine", "numpy"),
                    "hop_s": sim.embedder.hop_s,
                    "clips": len(report.indexed),
                    "audio_s": round(report.audio_s, 1),  # as decoded: what the model heard
                    "pipeline_s": round(pipeline_s, 2),
                    "clips_per_s": round(len(report.indexed) / pipeline_s, 2),
                    "x_realtime": round(report.audio_s / pipeline_s, 1),
                    "ceiling_s": round(model_s, 2),
                    "pipeline_over_ceiling": round(model_s / pipeline_s, 3),
                    "pipeline_runs_s": [round(t, 2) for t, _ in pipeline_runs],
                    "ceiling_runs_s": [round(t, 2) for t, _ in ceiling_runs],
                    # What bounds the ratio where the model keeps every core busy: the CPU the rest of the
                    # pipeline needs (decoding, resampling, the catalog's and Milvus Lite's writes, all in this
                    # process) on top of the model's, and the core-seconds no thread used. Fastest runs' figures.
                    "pipeline_cpu_s": round(pipeline_cpu, 2),
                    "ceiling_cpu_s": round(model_cpu, 2),
                    "pipeline_idle_core_s": round(CORES * pipeline_s - pipeline_cpu, 2),
                    "ceiling_idle_core_s": round(CORES * model_s - model_cpu, 2),
                }
            )
            if seed and name == "panns-cnn14":
                results[-1]["over_seed_loop"] = round(results[-1]["clips_per_s"] / seed["clips_per_s"], 1)
            print(json.dumps(results[-1]), flush=True)
    summary = {
        "bench": "ingest",
        "machine": machine(),
        "corpus_audio_s": round(audio_s, 1),
        "results": results,
        "seed_loop": seed,
        "quick": args.quick,
        "repeat": args.repeat,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
