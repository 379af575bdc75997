"""The embedded default's search engine alone (core/mirror.py) at large N, against numpy exact search in the same run.

    python bench/mirror.py --n 1000000 --out mirror-1m.json

bench/search.py measures the whole embedded default (Milvus Lite + the mirror) up to what Milvus Lite can hold;
this measures the mirror where Milvus Lite cannot go on a small machine (1M segment vectors are 8 GB of float32,
and Lite holds several copies). Needs numpy and faiss only, so it also runs on a bare machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import time
import types
from pathlib import Path

import numpy as np
from report import machine, report  # bench/ is the script's own folder, first on sys.path

CORE = Path(__file__).resolve().parents[1] / "core"


def load_mirror_module():
    """core/mirror.py and the sibling modules it imports, without running audiosim's __init__ (which needs the
    whole installed package): the core folder stands in as a bare package."""
    package = types.ModuleType("_audiosim_core")
    package.__path__ = [str(CORE)]
    sys.modules[package.__name__] = package
    return importlib.import_module(f"{package.__name__}.mirror")


def clustered_batch(start: int, count: int, dim: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(start + 1)
    x = centres[rng.integers(len(centres), size=count)] + rng.gamma(0.5, 0.6, (count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rss_mb() -> float:
    """This process's resident memory now (ru_maxrss is only the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="25k vectors: past the switch to the IVF index")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries = 25_000, 50
    mirror_module = load_mirror_module()
    centres = np.random.default_rng(0).gamma(0.5, 1.0, (200, args.dim)).astype(np.float32)
    data = np.empty((args.n, args.dim), np.float32)  # the numpy baseline's own copy
    for start in range(0, args.n, 10_000):
        data[start : start + 10_000] = clustered_batch(start, min(10_000, args.n - start), args.dim, centres)
    before_mb = rss_mb()
    m = mirror_module.Mirror(args.dim)
    t = time.perf_counter()
    for start in range(0, args.n, 10_000):  # arrives in batches, as an indexer writes it (retraining as it grows)
        ids = np.arange(start, min(start + 10_000, args.n))
        m.upsert(ids, ids // 8, (ids % 8).astype(np.float32), data[start : start + 10_000])
    build_s = time.perf_counter() - t
    mirror_mb = rss_mb() - before_mb
    queries = clustered_batch(10**9, args.queries, args.dim, centres)

    mirror_times, numpy_times, recalls = [], [], []
    m.search(queries[:5], 10)
    for q in queries:
        t = time.perf_counter()
        hits = m.search(q, 10)[0]
        mirror_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        scores = data @ q
        top = np.argpartition(-scores, 10)[:10]
        numpy_times.append(time.perf_counter() - t)
        recalls.append(len({h[0] for h in hits} & set(m.ids[top].tolist())) / 10)
    t = time.perf_counter()
    m.search(queries, 10)
    batch_qps = len(queries) / (time.perf_counter() - t)
    result = {
        "bench": "mirror",
        "n": args.n,
        "dim": args.dim,
        "engine": "exact" if m.ivf is None else f"{type(m.ivf).__name__} nlist {m.ivf.nlist} nprobe {m.ivf.nprobe}",
        "build_s": round(build_s, 1),
        "p50_ms": round(float(np.median(mirror_times)) * 1000, 3),
        "p99_ms": round(float(np.percentile(mirror_times, 99)) * 1000, 3),
        "numpy_exact_p50_ms": round(float(np.median(numpy_times)) * 1000, 3),
        "numpy_over_mirror_p50": round(float(np.median(numpy_times) / np.median(mirror_times)), 1),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "batch_queries_per_s": round(batch_qps, 1),
        # The whole process's peak (the baseline's float32 copy included), and what the mirror holds once built.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "mirror_resident_mb": round(mirror_mb),
        "raw_vectors_mb": round(data.nbytes / 2**20),
        "machine": machine(),
        "quick": args.quick,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
