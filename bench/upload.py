"""Query by upload, end to end: decode -> embed -> search -> catalog lookup, for 1 s, 10 s and 60 s clips.

    .venv/bin/python bench/upload.py --panns-random          # Cnn14 with a random-weight checkpoint
    .venv/bin/python bench/upload.py --panns-random --hop 2 --runtimes onnx torch   # a catalog indexed --hop 2
    .venv/bin/python bench/upload.py --quick

The catalog holds --clips generated sounds indexed with the same model. Each query length is timed --repeats
times through ``AudioSim.search_file`` (what the Datasette upload route and ``audiosim search`` call), on each
Cnn14 engine in the same run: bfloat16 (the CPU default where the CPU has AMX or AVX-512 BF16), float32 on
oneDNN's packed kernels (the default where it has AVX-512 or AVX2 without them), ONNX Runtime (the default
elsewhere) and int8 against torch eager; --quick, the CPU default against torch eager. A query is cut into
windows at its catalog's hop, so --hop (audiosim index --hop) sets how many windows a query runs through the
model: 9 for 10 s at the default 1 s, 5 at 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ingest import CORPUS_RATE, add_model_arguments, make_corpus, panns_model_dir  # noqa: E402
from report import machine, report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    add_model_arguments(parser)
    parser.add_argument("--runtimes", nargs="*", help="Cnn14's engines to time (default: every one this CPU runs)")
    parser.add_argument("--hop", type=float, help="seconds between the catalog's windows (default: 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    lengths = (1.0, 10.0, 60.0)
    if args.quick:
        args.clips, args.repeats, lengths = 4, 1, (1.0, 10.0)

    from audiosim import Settings
    from audiosim.embedders.panns import cpu_runtimes
    from audiosim.service import AudioSim
    from audiosim.synth import sound, write

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = panns_model_dir(args, tmp)
        make_corpus(tmp / "corpus", args.clips)
        queries = {}
        for seconds in lengths:
            queries[seconds] = tmp / f"query-{int(seconds)}s.mp3"
            write(queries[seconds], sound("chirp", seconds, seed=7, sr=CORPUS_RATE), CORPUS_RATE, format="MP3")
        catalog = str(tmp / "catalog.db")
        # --quick checks the steps: the CPU default and its torch baseline, without int8's one-time quantization.
        for runtime in ("auto", "torch") if args.quick else args.runtimes or cpu_runtimes():
            settings = Settings(catalog, model="panns-cnn14", model_dir=model_dir, runtime=runtime, hop_s=args.hop)
            with AudioSim(settings) as sim:
                sim.index([tmp / "corpus"])
                hop_s = sim.collection().hop_s  # the catalog's, which its queries are cut at
                sim.search_file(queries[1.0])  # warm-up: weights, the ONNX session, the store's collection
                for seconds, path in queries.items():
                    times = []
                    for _ in range(args.repeats):
                        t = time.perf_counter()
                        matches = sim.search_file(path, k=10)
                        times.append(time.perf_counter() - t)
                    assert matches, "a query found nothing"
                    results.append(
                        {
                            "engine": sim.embedder.engine,
                            "query_s": seconds,
                            "median_ms": round(statistics.median(times) * 1000, 1),
                            "max_ms": round(max(times) * 1000, 1),
                        }
                    )
                    print(json.dumps(results[-1]), flush=True)
    by_key = {(r["engine"], r["query_s"]): r for r in results}
    for r in results:
        torch_ms = by_key.get(("torch", r["query_s"]), {}).get("median_ms")
        if r["engine"] != "torch" and torch_ms:
            r["torch_over_this"] = round(torch_ms / r["median_ms"], 2)
    summary = {
        "bench": "upload",
        "machine": machine(),
        "catalog_clips": args.clips,
        "hop_s": hop_s,
        "results": results,
        "quick": args.quick,
    }
    report(summary, args.out)


if __name__ == "__main__":
    main()
