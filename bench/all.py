"""Every headline benchmark in one command, and the table the README shows: each figure, its baseline measured in
the same run, the ratio, the target, the machine and the command that reproduces it.

    .venv/bin/python bench/all.py --out-dir bench/results/latest
    .venv/bin/python bench/all.py --milvus http://127.0.0.1:19530 --out-dir ...   # the Milvus server at 100k too
    .venv/bin/python bench/all.py --quick --out-dir /tmp/bench                    # a pipeline check, not a measurement

Runs, one after another (two cores: benchmarks side by side would slow each other): ingest.py (every model;
Cnn14 on the engine audiosim picks on this CPU and on int8, against the seed loop), search.py at 100k on the embedded
default (and on --milvus), upload.py and long_file.py, all on a random-weight Cnn14 checkpoint (speed and memory
do not depend on the weights). Each bench's JSON goes to --out-dir, with summary.json and summary.md (the table)
beside them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from report import machine  # noqa: E402


def steps(milvus: str | None) -> list[tuple[str, list[str]]]:
    """(result name, the bench's arguments) in the order they run."""
    from audiosim.embedders.panns import cpu_runtimes

    # Cnn14 on the engine audiosim picks on this CPU (bfloat16 where the CPU has it, float32 on oneDNN's packed
    # kernels where it has AVX-512 or AVX2 without it, else ONNX float32) and on int8, the opt-in faster one. The
    # engines it never picks here are timed by ingest.py on its own: torch eager, the GPU's engine, which upload.py
    # also times in this run as its baseline (its pipeline and ceiling took 83 s of a 17-minute run on an EPYC Zen 4),
    # and ONNX float32 beside a torch twin (71 s of a 16.4-minute run there).
    usable = cpu_runtimes()
    chosen = [usable[0]] + ["int8"] * ("int8" in usable)
    planned = [
        ("ingest", ["ingest.py", "--panns-random", "--runtimes", *chosen]),
        ("search-lite-100k", ["search.py", "--n", "100000"]),
    ]
    if milvus:
        planned.append(("search-server-100k", ["search.py", "--n", "100000", "--milvus", milvus]))
    planned += [
        ("upload", ["upload.py", "--panns-random"]),
        ("long-file-2h", ["long_file.py", "--panns-random"]),
    ]
    return planned


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--milvus", help="a Milvus server's URI: measure search on it too")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    results, commands, wall_s = {}, {}, {}
    quick = ["--quick"] if args.quick else []
    # One random checkpoint for the benches that load Cnn14 on every engine, so that each engine's graph is
    # exported (and, for int8, quantized) once, not once a bench. long_file.py keeps its own: it measures the
    # memory of a checkpoint's first use, export included; except in --quick, which checks the steps, not the
    # figures (sharing saves it 20 s of export on an EPYC Zen 3).
    with tempfile.TemporaryDirectory(prefix="audiosim-bench-models-") as models:
        sharing = ["ingest.py", "upload.py"] + ["long_file.py"] * args.quick
        shared = {bench: ["--model-dir", models] for bench in sharing}
        for name, bench_args in steps(args.milvus):
            out = out_dir / f"{name}.json"
            command = [sys.executable, str(BENCH / bench_args[0]), *bench_args[1:], *quick]
            commands[name] = shlex.join([".venv/bin/python", f"bench/{bench_args[0]}", *command[2:]])
            print(f"{name}: {commands[name]}", file=sys.stderr, flush=True)
            started = time.monotonic()
            command += shared.get(bench_args[0], [])
            done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
            wall_s[name] = round(time.monotonic() - started, 1)
            if done.returncode != 0:  # the others still run: one failed bench must not cost the whole hour
                print(f"{name} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}", file=sys.stderr, flush=True)
                continue
            results[name] = json.loads(out.read_text())

    rows = table(results, commands)
    summary = {
        "bench": "all",
        "machine": machine(),
        "quick": args.quick,
        "wall_s": wall_s,
        "total_wall_s": round(sum(wall_s.values()), 1),
        "failed": [name for name in wall_s if name not in results],
        "rows": rows,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    markdown = to_markdown(rows, summary)
    (out_dir / "summary.md").write_text(markdown)
    print(markdown)
    return 1 if summary["failed"] else 0


def table(results: dict, commands: dict) -> list[dict]:
    """The headline rows: (figure, value, baseline in the same run, ratio, target, command)."""
    rows = []

    def row(step, figure, value, baseline, ratio, target):
        rows.append(
            {
                "figure": figure,
                "value": value,
                "baseline": baseline,
                "ratio": ratio,
                "target": target,
                "command": commands[step],
            }
        )

    if ingest := results.get("ingest"):
        seed = ingest["seed_loop"]
        for r in ingest["results"]:
            run = f"{r['model']} on {r['engine']}, {r['hop_s']:g} s hop"
            if "over_seed_loop" in r:
                row(
                    "ingest",
                    f"ingest, {run}",
                    f"{r['clips_per_s']} clips/s ({r['x_realtime']}× realtime)",
                    f"seed loop {seed['clips_per_s']} clips/s",
                    f"{r['over_seed_loop']}×",
                    "≥ 10×",
                )
            row(
                "ingest",
                f"ingest pipeline against its ceiling, {run}",
                f"{r['pipeline_s']} s for {r['clips']} clips",
                f"the model alone on the same windows {r['ceiling_s']} s",
                f"{r['pipeline_over_ceiling']:.2f}",
                "≥ 0.90" if r["model"] != "dsp-logmel" else "none: this model is nearly free",
            )
    for step, where in (("search-lite-100k", "embedded default"), ("search-server-100k", "Milvus server")):
        if search := results.get(step):
            floor = search.get("server_floor_p50_ms")
            row(
                step,
                f"search p50 at {search['n']:,} vectors, {where}",
                f"{search['milvus_p50_ms']} ms (p99 {search['milvus_p99_ms']} ms), recall@10 {search['recall_at_10']}"
                + (f"; the server's floor {floor} ms" if floor else ""),
                f"numpy exact {search['numpy_exact_p50_ms']} ms",
                times_as(search["numpy_exact_p50_ms"] / search["milvus_p50_ms"], "faster", "slower"),
                "no slower than numpy" if step == "search-lite-100k" else "≤ 5 ms at recall ≥ 0.95",
            )
    if (search := results.get("search-lite-100k")) and search.get("serving_peak_rss_mb"):
        row(
            "search-lite-100k",
            f"peak RSS serving search at {search['n']:,} vectors, embedded default",
            f"{search['serving_peak_rss_mb']} MB, a fresh process answering in {search['serving_first_answer_s']} s",
            f"the vectors as float32 alone {search['raw_vectors_mb']} MB",
            times_as(search["raw_vectors_mb"] / search["serving_peak_rss_mb"], "less", "more"),
            "",
        )
    if upload := results.get("upload"):
        torch = {r["query_s"]: r["median_ms"] for r in upload["results"] if r["engine"] == "torch"}
        default = upload["results"][0]["engine"]  # the bench runs the CPU default first
        for r in upload["results"]:
            if r["engine"] == default and r["query_s"] in torch:
                row(
                    "upload",
                    f"query by a {r['query_s']:g} s upload, end to end, {default}",
                    f"{r['median_ms']} ms",
                    f"torch eager {torch[r['query_s']]} ms",
                    times_as(torch[r["query_s"]] / r["median_ms"], "faster", "slower"),
                    "≤ 1 s" if r["query_s"] == 10 else "",
                )
    if long_file := results.get("long-file-2h"):
        row(
            "long-file-2h",
            f"peak RSS indexing a {long_file['audio_s'] / 3600:.3g} h file, {long_file['engine']}",
            f"{long_file['index_peak_rss_mb']} MB",
            f"the seed's librosa.load alone {long_file['seed_librosa_load_peak_rss_mb']} MB",
            times_as(long_file["seed_over_index_peak"], "less", "more"),
            "< 1.5 GB",
        )
    return rows


def times_as(ratio: float, better: str, worse: str) -> str:
    """A ratio of baseline over ours as people say it: "3.2× faster", or "1.5× slower" when it is under 1."""
    return f"{ratio:.2g}× {better}" if ratio >= 1 else f"{1 / ratio:.2g}× {worse}"


def to_markdown(rows: list[dict], summary: dict) -> str:
    lines = [
        f"Machine: {summary['machine']}; {summary['total_wall_s'] / 60:.1f} minutes in all"
        + (" (--quick: a pipeline check, not a measurement)" if summary["quick"] else ""),
        "",
        "| figure | measured | baseline, same run | ratio | target | command |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['figure']} | {r['value']} | {r['baseline']} | {r['ratio']} | {r['target']} | `{r['command']}` |"
        )
    if summary["failed"]:
        lines += ["", f"Failed: {', '.join(summary['failed'])} (see the messages above)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
