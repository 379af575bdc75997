"""The benchmarks run end to end in --quick mode (a pipeline check: timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audiosim.embedders.packed import amx_available, bfloat16_available, float32_preferred, winograd_preferred

BENCH = Path(__file__).resolve().parents[1] / "bench"
ENGINES = {
    "bfloat16": "torch-bfloat16",
    "float32": "torch-float32",
    "onnx": "onnxruntime",
    "int8": "onnxruntime-int8",
    "torch": "torch",
}


def default_engine_here() -> str:
    """The engine `auto` takes here, which is what --quick runs Cnn14 on: bfloat16 where the CPU has AMX or
    AVX-512 BF16 (the tests' checkpoint passes its probe), the float32 twin where it has AVX-512 or AVX2 without
    them, else ONNX Runtime float32."""
    from audiosim.embedders.panns import cpu_runtimes

    return ENGINES[cpu_runtimes()[0]]


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


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, milvus_server) -> Path:
    """bench/all.py --quick, the one command the README gives, run once: every headline bench's result in a folder."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(BENCH / "all.py"), "--quick", "--out-dir", str(out), "--milvus", milvus_server],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def result_of(quick_run: Path, name: str) -> dict:
    return json.loads((quick_run / f"{name}.json").read_text())


@pytest.mark.slow
@pytest.mark.server
def test_ingest_bench_measures_every_model_against_its_ceiling_and_the_seed_loop(quick_run):
    result = result_of(quick_run, "ingest")
    engines = {(r["model"], r["engine"]) for r in result["results"]}
    assert {("panns-cnn14", default_engine_here()), ("dsp-logmel", "numpy")} <= engines  # --quick: the default
    assert all(r["clips"] == 6 and r["pipeline_over_ceiling"] > 0 for r in result["results"])
    # The CPU each spent, which is what bounds the ratio where the model keeps every core busy.
    assert all(r["pipeline_cpu_s"] > 0 and r["ceiling_cpu_s"] > 0 for r in result["results"])
    # Realtime factors count the audio as decoded, which must be the corpus as generated.
    assert all(
        abs(r["audio_s"] - result["corpus_audio_s"]) < 0.03 * result["corpus_audio_s"] for r in result["results"]
    )
    assert result["seed_loop"]["files"] == 2
    assert all("over_seed_loop" in r for r in result["results"] if r["model"] == "panns-cnn14")


@pytest.mark.slow
@pytest.mark.server
def test_search_bench_reports_latency_recall_and_throughput(quick_run):
    result = result_of(quick_run, "search-lite-100k")
    assert result["engine"] == "milvus-lite" and result["n"] == 2000 and 0.5 <= result["recall_at_10"] <= 1.0
    assert result["milvus_batch_queries_per_s"] > 0 and result["peak_rss_mb"] > result["raw_vectors_mb"]
    assert result["serving_peak_rss_mb"] > result["raw_vectors_mb"]  # a fresh reader process, measured
    assert result["serving_first_answer_s"] > 0


@pytest.mark.slow
@pytest.mark.server
def test_search_bench_against_a_server_settles_it_and_measures_its_floor(quick_run, milvus_server):
    result = result_of(quick_run, "search-server-100k")
    assert result["engine"] == "milvus-server" and result["index_state"]["indexed_rows"] == 2000
    assert 0.5 <= result["recall_at_10"] <= 1.0 and result["segments"] >= 1
    assert result["server_floor_p50_ms"] > 0
    from audiosim.vectors import VectorStore

    store = VectorStore(milvus_server)  # the bench drops what it made
    try:
        assert not [name for name in store.client.list_collections() if name.startswith("bench_")]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.server
def test_upload_bench_times_each_query_length_on_every_engine(quick_run):
    result = result_of(quick_run, "upload")
    assert {(r["engine"], r["query_s"]) for r in result["results"]} == {  # --quick: the default and its baseline
        (engine, seconds) for engine in (default_engine_here(), "torch") for seconds in (1.0, 10.0)
    }


@pytest.mark.slow
@pytest.mark.server
def test_long_file_bench_measures_indexing_memory_against_the_seed_decode(quick_run):
    result = result_of(quick_run, "long-file-2h")
    assert result["audio_s"] == 120 and result["x_realtime"] > 0
    # Each figure is a real process's peak: at least Cnn14's weights (330 MB) for the indexer.
    assert result["index_peak_rss_mb"] > 330 and result["first_use_export_peak_rss_mb"] > 330
    assert result["seed_librosa_load_peak_rss_mb"] > 0
    assert result["engine"] == default_engine_here()  # named as the ingest bench names it


def test_all_times_cnn14_on_the_engine_audiosim_picks_here_and_on_int8(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # bench/'s modules, for this test only
    from all import steps

    ingest = dict(steps(None))["ingest"]
    runtimes = ingest[ingest.index("--runtimes") + 1 :]
    # torch eager is upload.py's baseline; ONNX float32 beside a torch twin is left to ingest.py run alone.
    default = "bfloat16" if bfloat16_available() else "float32" if float32_preferred() else "onnx"
    assert runtimes == [default, "int8"]


def test_the_seed_loop_builds_and_loads_cnn14_as_the_seed_did(monkeypatch, panns_model_dir):
    """The ingest bench's baseline pays what the seed paid for each file's model: torchlibrosa's front end (its
    filters filled through librosa) and every layer initialised before the checkpoint is copied in. It once called
    audiosim's own loader, and got faster with each of audiosim's changes to it. Its answers are audiosim's."""
    import numpy as np
    import torch
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    from audiosim.embedders.panns import PannsCnn14, load_cnn14
    from audiosim.synth import sound

    monkeypatch.syspath_prepend(str(BENCH))  # bench/'s modules, for this test only
    from ingest import seed_cnn14

    checkpoint = panns_model_dir / PannsCnn14.checkpoint.filename
    seed, ours = seed_cnn14(checkpoint), load_cnn14(checkpoint)
    assert isinstance(seed.spectrogram_extractor, Spectrogram)
    assert isinstance(seed.logmel_extractor, LogmelFilterBank)
    assert not seed.training
    clip = torch.from_numpy(sound("chirp", 3.0, seed=1)[None].astype(np.float32))
    with torch.inference_mode():
        (seed_embedding, seed_scores), (embedding, scores) = seed(clip), ours(clip)
    assert torch.allclose(seed_embedding, embedding, rtol=1e-3, atol=1e-4 * float(embedding.abs().max()))
    assert torch.allclose(seed_scores, scores, atol=1e-4)


@pytest.mark.slow
@pytest.mark.server
def test_all_summarises_every_bench_as_figure_baseline_ratio_and_command(quick_run):
    summary = json.loads((quick_run / "summary.json").read_text())
    assert summary["quick"] and not summary["failed"]
    assert set(summary["wall_s"]) == {"ingest", "search-lite-100k", "search-server-100k", "upload", "long-file-2h"}
    figures = [row["figure"] for row in summary["rows"]]
    # One seed-loop row per Cnn14 engine, a pipeline row per model and engine, a row per search engine, the
    # upload rows the default engine has a torch baseline for, the memory of serving search and of the long file.
    assert sum(figure.startswith("ingest, panns-cnn14") for figure in figures) == 1  # --quick: the default engine
    assert sum(figure.startswith("search p50") for figure in figures) == 2
    assert sum(figure.startswith("query by a") for figure in figures) == 2
    assert sum(figure.startswith("peak RSS") for figure in figures) == 2  # serving search, the long file
    assert all(
        row["baseline"] and row["ratio"] and row["command"].startswith(".venv/bin/python bench/")
        for row in summary["rows"]
    )
    table = (quick_run / "summary.md").read_text()
    assert table.count("\n| ") == len(summary["rows"]) + 1  # the header, then a line a row


@pytest.mark.slow
def test_mirror_bench_runs_the_mirror_alone_outside_the_installed_package(tmp_path):
    result = run_bench("mirror.py", tmp_path=tmp_path)
    assert result["n"] == 25_000 and result["engine"].startswith("IndexIVF")
    assert 0.5 <= result["recall_at_10"] <= 1.0 and result["batch_queries_per_s"] > 0


@pytest.mark.slow
def test_export_bench_times_each_export_choice_against_the_old_graph(tmp_path):
    result = run_bench("export.py", tmp_path=tmp_path)
    rows = [(r["precision"], r["variant"]) for r in result["results"]]
    bfloat16 = bfloat16_available()  # its twin is timed only where the CPU runs it in hardware
    amx = amx_available()  # audiosim's bfloat16 twin there: block 5 in pieces; elsewhere blocks 4-5 by Winograd
    bfloat16_rows = ["bfloat16"] * (5 * bfloat16)
    assert [precision for precision, _ in rows] == ["float32"] * 5 + ["int8"] * 6 + bfloat16_rows
    winograd = winograd_preferred("float32")  # audiosim's float32 twin on AVX2; with AVX-512, block 5 as patches
    float32_twin = "(audiosim's float32 twin on AVX2)" if winograd else "(audiosim's float32 twin with AVX-512)"
    own = ("(audiosim)", float32_twin, "(audiosim on AMX)" if amx else "(audiosim on AVX-512 BF16)")
    audiosim_s = [variant.endswith(own) for _, variant in rows]
    bfloat16_s = [False, False, False, amx, not amx] if bfloat16 else []
    assert audiosim_s == [False, True, False, not winograd, winograd] + [False] * 5 + [True] + bfloat16_s
    assert all(r["best_ms"] > 0 and r["speedup_best"] > 0 for r in result["results"])
    baselines = [r["speedup_best"] for r in result["results"] if r["variant"].startswith(("STFT in", "eager"))]
    assert baselines == [1.0, 1.0] + [1.0] * bfloat16
