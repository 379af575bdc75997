"""The benchmarks run end to end in --quick mode (a pipeline check: timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
ENGINES = {"bfloat16": "torch-bfloat16", "onnx": "onnxruntime", "int8": "onnxruntime-int8", "torch": "torch"}


def engines_here() -> set[str]:
    """What each bench runs Cnn14 on here: bfloat16 too where the CPU has AMX or AVX-512 BF16."""
    from audiosim.embedders.panns import cpu_runtimes

    return {ENGINES[runtime] for runtime in cpu_runtimes()}


def run_bench(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{script}.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


@pytest.mark.slow
def test_ingest_bench_measures_every_model_against_its_ceiling_and_the_seed_loop(tmp_path):
    result = run_bench("ingest.py", "--panns-random", tmp_path=tmp_path)
    engines = {(r["model"], r["engine"]) for r in result["results"]}
    assert {("panns-cnn14", engine) for engine in engines_here()} | {("dsp-logmel", "numpy")} <= engines
    assert all(r["clips"] == 6 and r["pipeline_over_ceiling"] > 0 for r in result["results"])
    # Realtime factors count the audio as decoded, which must be the corpus as generated.
    assert all(
        abs(r["audio_s"] - result["corpus_audio_s"]) < 0.03 * result["corpus_audio_s"] for r in result["results"]
    )
    assert result["seed_loop"]["files"] == 2
    assert all("over_seed_loop" in r for r in result["results"] if r["model"] == "panns-cnn14")


@pytest.mark.slow
def test_search_bench_reports_latency_recall_and_throughput(tmp_path):
    result = run_bench("search.py", tmp_path=tmp_path)
    assert result["n"] == 2000 and 0.5 <= result["recall_at_10"] <= 1.0
    assert result["milvus_batch_queries_per_s"] > 0 and result["peak_rss_mb"] > result["raw_vectors_mb"]
    assert result["serving_peak_rss_mb"] > result["raw_vectors_mb"]  # a fresh reader process, measured


@pytest.mark.slow
def test_mirror_bench_runs_the_mirror_alone_outside_the_installed_package(tmp_path):
    result = run_bench("mirror.py", tmp_path=tmp_path)
    assert result["n"] == 25_000 and result["engine"].startswith("IndexIVF")
    assert 0.5 <= result["recall_at_10"] <= 1.0 and result["batch_queries_per_s"] > 0


@pytest.mark.slow
def test_upload_bench_times_each_query_length_on_every_engine(tmp_path):
    result = run_bench("upload.py", "--panns-random", tmp_path=tmp_path)
    assert {(r["engine"], r["query_s"]) for r in result["results"]} == {
        (engine, seconds) for engine in engines_here() for seconds in (1.0, 10.0)
    }


@pytest.mark.slow
def test_long_file_bench_measures_indexing_memory_against_the_seed_decode(tmp_path):
    result = run_bench("long_file.py", "--panns-random", tmp_path=tmp_path)
    assert result["audio_s"] == 120 and result["x_realtime"] > 0
    # Each figure is a real process's peak: at least Cnn14's weights (330 MB) for the indexer.
    assert result["index_peak_rss_mb"] > 330 and result["first_use_export_peak_rss_mb"] > 330
    assert result["seed_librosa_load_peak_rss_mb"] > 0
    assert result["engine"] in engines_here()  # named as the ingest bench names it


@pytest.mark.slow
def test_export_bench_times_each_export_choice_against_the_old_graph(tmp_path):
    result = run_bench("export.py", tmp_path=tmp_path)
    rows = [(r["precision"], r["variant"]) for r in result["results"]]
    assert [precision for precision, _ in rows] == ["float32"] * 2 + ["int8"] * 3
    assert [variant.endswith("(audiosim)") for _, variant in rows] == [False, True, False, False, True]
    assert all(r["best_ms"] > 0 and r["speedup_best"] > 0 for r in result["results"])
    assert [r["speedup_best"] for r in result["results"] if r["variant"] == "STFT in the graph"] == [1.0, 1.0]
