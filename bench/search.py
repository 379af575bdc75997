"""Search latency and recall@10 at N stored segment vectors, against numpy exact search in the same run.

    .venv/bin/python bench/search.py --n 10000                    # Milvus Lite (the embedded default)
    .venv/bin/python bench/search.py --n 10000 --milvus http://127.0.0.1:19530
    .venv/bin/python bench/search.py --n 1000000 --milvus http://127.0.0.1:19530   # the baseline's copy on disk
    .venv/bin/python bench/search.py --quick                      # a pipeline check, not a measurement

Vectors are clustered and non-negative, 2048-d and L2-normalised, like PANNs embeddings. Prints one JSON
object; with --out it is also written to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from mirror import clustered_batch  # bench/ is the script's own folder, first on sys.path
from report import machine, report


def clustered_vectors(n: int, dim: int, seed: int = 0, clusters: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.gamma(0.5, 1.0, (clusters, dim)).astype(np.float32)
    vectors = centres[rng.integers(clusters, size=n)] + rng.gamma(0.5, 0.6, (n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


IN_MEMORY_UP_TO = 2**31  # bytes of float32 vectors; beyond, the baseline's copy lives in a file (see below)


def clustered_vectors_on_disk(path: str, n: int, dim: int) -> np.ndarray:
    """Vectors like ``clustered_vectors``, made batch by batch as bench/mirror.py makes them (the same vectors at
    the same N), written to a file and mapped: at 1M (8 GB of float32) the baseline's copy and a Milvus server's
    own do not both fit in 24 GB of memory, but a mapped file lives in the page cache, which the kernel gives back
    to the server when it needs it."""
    centres = np.random.default_rng(0).gamma(0.5, 1.0, (200, dim)).astype(np.float32)
    data = np.lib.format.open_memmap(path, "w+", np.float32, (n, dim))
    for start in range(0, n, 10_000):
        data[start : start + 10_000] = clustered_batch(start, min(10_000, n - start), dim, centres)
    data.flush()
    return data


def exact_top10(queries: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Each query's 10 nearest rows by inner product, best first, a block of rows at a time (no n-wide sort)."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_ids = np.full((len(queries), 10), -1, np.int64)
    for start in range(0, len(data), 100_000):
        block = queries @ data[start : start + 100_000].T
        k = min(10, block.shape[1])
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        scores = np.concatenate([best_scores, np.take_along_axis(block, top, 1)], axis=1)
        ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argpartition(-scores, 9, axis=1)[:, :10]
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    return np.take_along_axis(best_ids, np.argsort(-best_scores, axis=1), 1)


def settle(store, name: str, rows: int, seconds: float = 600, quiet_s: float = 30, poll_s: float = 2) -> dict:
    """Measure the steady state a server reaches after a bulk load: it merges the many small sealed segments and
    indexes the merged ones in the background; searches run during that catch both (measured at 100k: p50 11 ms
    and p99 270 ms during, 4.6 ms after). Ask for a compaction, wait for it and for the index, and again until
    the segment layout has held for ``quiet_s``: the server goes on merging after its first compaction reports
    completion (measured at 100k: 4 segments then, 2 half a minute later; two runs on one Xeon Cascade Lake gave
    16.3 ms p50 on a layout caught early, 6 segments, and 7.2 ms on a settled one, 2). ``quiet_s`` 0 stops after
    the first compaction and index: the steps, not the steady state."""
    deadline = time.monotonic() + seconds
    layout, info = None, {}
    while time.monotonic() < deadline:
        job = store.client.compact(name)
        while store.client.get_compaction_state(job) != "Completed" and time.monotonic() < deadline:
            time.sleep(poll_s)
        info = wait_for_index(store, name, rows, deadline - time.monotonic(), poll_s)
        if not quiet_s:
            break
        time.sleep(quiet_s)
        now = sorted(s.num_rows for s in store.client.list_persistent_segments(name))
        if now == layout:
            break
        layout = now
    return info


def wait_for_index(store, name: str, rows: int, seconds: float = 300, poll_s: float = 2) -> dict:
    deadline = time.monotonic() + seconds
    info = {}
    while time.monotonic() < deadline:
        info = store.client.describe_index(name, "vector")
        indexed = int(info.get("indexed_rows", rows))
        if (
            indexed >= rows
            and int(info.get("pending_index_rows", 0)) == 0
            and info.get("state", "Finished") == "Finished"
        ):
            break
        time.sleep(poll_s)
    return info


SERVE = """
import json, resource, sys, time, numpy as np
from audiosim.vectors import VectorStore
started = time.perf_counter()
store = VectorStore(sys.argv[1])
queries = np.load(sys.argv[3])
store.ensure_collection(sys.argv[2], queries.shape[1])  # as the service does before every search
store.search(sys.argv[2], queries[:1], 10)
first_answer_s = time.perf_counter() - started
for q in queries:
    store.search(sys.argv[2], q[None], 10)
peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"peak_rss_mb": peak_rss_mb, "first_answer_s": round(first_answer_s, 2)}))
"""


def serving(uri: str, name: str, queries: np.ndarray, folder: str) -> dict:
    """Peak RSS of a fresh process that opens the store and answers the queries, as a Datasette serving it
    would, and its time from opening the store to its first answer."""
    np.save(os.path.join(folder, "queries.npy"), queries)
    out = subprocess.run(
        [sys.executable, "-c", SERVE, uri, name, os.path.join(folder, "queries.npy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


FLOOR_ROWS = 100


def server_floor(store, name: str, rows: np.ndarray, queries: np.ndarray) -> list[float]:
    """Single-query times against a collection of a few rows on the same server: the cost of a search request
    itself (client, gRPC, the server's proxy and query node), which no index choice can remove."""
    if store.has_collection(name):
        store.drop_collection(name)
    store.ensure_collection(name, rows.shape[1], "FLAT")
    store.upsert(name, list(range(len(rows))), [0] * len(rows), [0.0] * len(rows), rows)
    store.flush(name)
    store.search(name, queries[:5], 10)  # warm-up: load, first-query costs
    times, _ = single_queries(store, name, queries)
    store.drop_collection(name)
    return times


def single_queries(store, name: str, queries: np.ndarray, **tuning) -> tuple[list[float], list[set[int]]]:
    """Each query searched on its own, top 10: its time and the vector ids it found."""
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = store.search(name, q[None], 10, **tuning)[0]
        times.append(time.perf_counter() - t)
        found.append({h.vector_id for h in hits})
    return times, found


def recall_at_10(found: list[set[int]], exact: np.ndarray) -> float:
    shared = [len(ids & set(true.tolist())) / 10 for ids, true in zip(found, exact, strict=True)]
    return round(float(np.mean(shared)), 4)


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--milvus", default=None, help="server URI; default: a Milvus Lite store in a temp dir")
    parser.add_argument("--ef", type=int, default=None, help="HNSW search breadth (default: the store's)")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists searched (default: the store's)")
    parser.add_argument("--sweep-nprobe", type=int, nargs="*", help="also measure these IVF nprobe values")
    parser.add_argument(
        "--index",
        choices=["HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT"],
        help="the collection's index (default: the store's)",
    )
    parser.add_argument("--nlist", type=int, help="IVF lists (default: the store's)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--store-dir", help=argparse.SUPPRESS)  # internal: build the Lite store here, keep it
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries = 2000, 20
    if not args.milvus and not args.store_dir:
        # Milvus Lite lets go of a store only when its process exits: build and measure in one process, then
        # measure a fresh reader in another.
        with tempfile.TemporaryDirectory() as tmp:
            child = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--store-dir", tmp]
            out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            queries = clustered_vectors(args.queries, args.dim, seed=1)
            served = serving(os.path.join(tmp, "bench.db"), result["collection"], queries, tmp)
            result["serving_peak_rss_mb"] = served["peak_rss_mb"]
            result["serving_first_answer_s"] = served["first_answer_s"]
        return report(result, args.out)
    from audiosim.vectors import INDEXES, VectorStore

    if args.nlist:
        for spec in INDEXES.values():
            if "nlist" in spec["params"]:
                spec["params"]["nlist"] = args.nlist

    queries = clustered_vectors(args.queries, args.dim, seed=1)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.store_dir or scratch
        if args.n * args.dim * 4 <= IN_MEMORY_UP_TO:
            data = clustered_vectors(args.n, args.dim)
        else:
            data = clustered_vectors_on_disk(os.path.join(scratch, "vectors.npy"), args.n, args.dim)
        uri = args.milvus or os.path.join(tmp, "bench.db")
        store = VectorStore(uri)
        name = f"bench_{os.getpid()}"
        if store.has_collection(name):
            store.drop_collection(name)
        store.ensure_collection(name, args.dim, args.index)
        t0 = time.perf_counter()
        for start in range(0, args.n, 100_000):
            ids = list(range(start, min(start + 100_000, args.n)))
            store.upsert(name, ids, [i // 8 for i in ids], [float(i % 8) for i in ids], data[ids[0] : ids[-1] + 1])
        store.flush(name)
        insert_s = time.perf_counter() - t0
        # Compaction and IVF training on 2 cores: about 2 minutes at 100k; allow proportionally more beyond.
        # --quick checks the steps, not the steady state: one compaction, polled often.
        quiet_s, poll_s = (0, 0.25) if args.quick else (30, 2)
        t0 = time.perf_counter()
        index_info = settle(store, name, args.n, max(600, args.n / 400), quiet_s, poll_s) if args.milvus else {}
        settle_s = time.perf_counter() - t0
        if args.milvus:
            # A server searches freshly inserted rows through an interim index of the growing segment (measured
            # recall@10 0.51 for ~15 s, then 0.96 once sealed and indexed); reloading measures the steady state.
            store.client.release_collection(name)
            store.client.load_collection(name)
            segments = len(store.client.list_loaded_segments(name))
        else:
            segments = None
        store.search(name, queries[:5], 10)  # warm-up: load, first-query costs

        tuning = {k: v for k, v in (("ef", args.ef), ("nprobe", args.nprobe)) if v}
        exact = exact_top10(queries, data)
        milvus_times, found = single_queries(store, name, queries, **tuning)

        # Throughput for batches: every query in one call.
        t = time.perf_counter()
        store.search(name, queries, 10, **tuning)
        milvus_batch_qps = len(queries) / (time.perf_counter() - t)
        t = time.perf_counter()
        exact_top10(queries, data)
        numpy_batch_qps = len(queries) / (time.perf_counter() - t)

        # Other search breadths on the same data, to show the latency/recall trade-off.
        sweep = []
        for nprobe in args.sweep_nprobe or []:
            times, found_at = single_queries(store, name, queries, nprobe=nprobe)
            sweep.append(
                {"nprobe": nprobe, "p50_ms": percentile_ms(times, 50), "recall_at_10": recall_at_10(found_at, exact)}
            )

        numpy_times = []
        for q in queries:
            t = time.perf_counter()
            scores = data @ q
            top = np.argpartition(-scores, 10)[:10]
            top[np.argsort(-scores[top])]
            numpy_times.append(time.perf_counter() - t)
        floor = server_floor(store, f"{name}_floor", data[:FLOOR_ROWS], queries) if args.milvus else []
        if args.milvus:
            store.drop_collection(name)
        store.close()

    engine = "milvus-server" if args.milvus else "milvus-lite"
    result = {
        "bench": "search",
        "engine": engine,
        "n": args.n,
        "dim": args.dim,
        "ef": args.ef,
        "nprobe": args.nprobe,
        "nlist": args.nlist,
        "index": (args.index or "IVF_FLAT")
        if args.milvus
        else "in-process mirror (exact below 20k rows, else a float16 IVF index)",
        "queries": args.queries,
        "insert_per_s": round(args.n / insert_s),
        "milvus_p50_ms": percentile_ms(milvus_times, 50),
        "milvus_p99_ms": percentile_ms(milvus_times, 99),
        "numpy_exact_p50_ms": percentile_ms(numpy_times, 50),
        "numpy_exact_p99_ms": percentile_ms(numpy_times, 99),
        "ratio_p50_milvus_over_numpy": round(float(np.median(milvus_times) / np.median(numpy_times)), 2),
        "recall_at_10": recall_at_10(found, exact),
        "milvus_batch_queries_per_s": round(milvus_batch_qps, 1),
        "numpy_batch_queries_per_s": round(numpy_batch_qps, 1),
        # This process's peak: the vectors as numpy (the baseline) plus, for Milvus Lite, the embedded store.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # Milvus Lite: a fresh process opening the store and serving the queries (Lite itself and the mirror).
        "serving_peak_rss_mb": None,
        "serving_first_answer_s": None,
        "collection": name,
        "raw_vectors_mb": round(data.nbytes / 2**20),
        "machine": machine(),
        "quick": args.quick,
        "sweep": sweep,
        # The same server answering a collection of FLOOR_ROWS vectors: what any search costs it, whatever the index.
        "server_floor_p50_ms": percentile_ms(floor, 50) if floor else None,
        "index_state": {k: index_info.get(k) for k in ("indexed_rows", "total_rows", "pending_index_rows", "state")},
        "segments": segments,
        "settle_s": round(settle_s, 1) if args.milvus else None,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
