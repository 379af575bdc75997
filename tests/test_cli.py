"""The ``audiosim`` command end to end (CliRunner over real files, SQLite and Milvus Lite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from test_decode import encode_with_pyav

from audiosim.cli import cli
from audiosim.synth import SR, collage, write


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke the CLI with the catalog, store and model taken from AUDIOSIM_ variables, as a user would set them."""
    monkeypatch.setenv("AUDIOSIM_CATALOG", str(tmp_path / "cat.db"))
    monkeypatch.setenv("AUDIOSIM_MILVUS", str(tmp_path / "vec.db"))
    monkeypatch.setenv("AUDIOSIM_MODEL_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("AUDIOSIM_MODEL", "dsp-logmel")

    def invoke(*args, code=0):
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_index_search_similar_stats_verify_remove(run, sounds):
    out = run("index", sounds).output
    assert "indexed 6" in out and "failed 0" in out and "model: dsp-logmel v1 (192-d)" in out
    assert "skipped 6 unchanged" in run("index", sounds).output

    results = json_lines(run("search", sounds / "tone.wav", sounds / "hum.wav", "-n", "3", "--json").output)
    assert len(results) == 6  # both queries in one call
    first = results[0]
    assert {"clip_id", "path", "score", "offset_s", "query"} <= set(first)
    assert first["path"] == str(sounds / "tone.wav") and first["query"] == str(sounds / "tone.wav")
    assert results[3]["path"] == str(sounds / "hum.wav") and results[3]["rank"] == 1

    like = json_lines(run("similar", first["clip_id"], "-n", "2", "--json").output)
    assert len(like) == 2 and first["clip_id"] not in [r["clip_id"] for r in like]
    assert "like clip" in run("similar", first["clip_id"]).output

    stats = json.loads(run("stats", "--json").stdout)
    assert stats["clips"] == 6 and stats["vectors"] == stats["segments"] and stats["model"].startswith("dsp-logmel")
    assert "0 problems" in run("verify").output
    assert "removed 1 clips" in run("remove", sounds / "tone.wav").output
    assert json.loads(run("stats", "--json").stdout)["clips"] == 5


def test_failed_files_are_listed_and_set_the_exit_code(run, sounds):
    (sounds / "junk.wav").write_bytes(b"\x00junk" * 100)
    result = run("index", sounds, code=1)
    assert "indexed 6" in result.output and "failed 1" in result.output
    assert f"failed: {sounds / 'junk.wav'}: " in result.output
    summary = json.loads(run("index", sounds, "--json", code=1).stdout)
    assert summary["skipped"] == 6 and summary["failed"][0]["path"] == str(sounds / "junk.wav")
    assert summary["engine"] is None  # nothing was embedded: no model loaded to name it


@pytest.mark.parametrize(
    "args,message",
    [
        (["similar", "abc"], "'abc' is not a valid integer"),
        (["similar", "424242"], "No clip with id 424242"),
        (["search", "does-not-exist.wav"], "does not exist"),
        (["search", "{sounds}/tone.wav", "-n", "0"], "0 is not in the range"),
        (["index"], "Missing argument"),
        (["search", "{sounds}/tone.wav", "--model", "nope"], "Unknown model 'nope'"),
        (["search", "{sounds}/tone.wav", "--model", "aisfx"], "built with dsp-logmel v1"),
        (["remove", "{sounds}/nothing.wav"], "No catalogued clip"),
        (["search", "{sounds}/junk.wav"], "junk.wav: not a readable audio file"),
    ],
)
def test_errors_are_one_clear_line(run, sounds, args, message):
    run("index", sounds)
    (sounds / "junk.wav").write_bytes(os.urandom(3000))
    result = CliRunner().invoke(cli, [a.format(sounds=sounds) for a in args])
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output


def test_commands_have_help_with_examples():
    commands = {name: cmd for name, cmd in cli.commands.items()}
    assert set(commands) >= {"index", "search", "similar", "models", "stats", "verify", "remove", "demo"}
    for name in [*commands, "models fetch", "models compare"]:
        result = CliRunner().invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output
        assert "audiosim " in result.output  # an example line


def test_models_lists_usability_and_reasons(tmp_path):
    result = CliRunner().invoke(cli, ["models", "--model-dir", str(tmp_path)])
    assert "panns-cnn14" in result.output and "not usable: no checkpoint" in result.output
    rows = json_lines(CliRunner().invoke(cli, ["models", "--json", "--model-dir", str(tmp_path)]).output)
    assert {r["name"]: r["default"] for r in rows} == {"panns-cnn14": False, "aisfx": True, "dsp-logmel": False}


def test_models_compare_measures_an_engine_on_your_own_files(tmp_path, corpus, panns_model_dir):
    import shutil

    folder = tmp_path / "sounds"
    shutil.copytree(corpus, folder)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    models = tmp_path / "models"
    shutil.copytree(panns_model_dir, models, ignore=shutil.ignore_patterns("*.onnx*"))
    compare = ["models", "--model-dir", models, "compare", folder, "--runtime", "int8", "--windows", 40]
    row = json_lines(cli_run(*compare, "--json").output)[0]
    assert (row["reference"], row["candidate"]) == ("torch", "onnxruntime-int8")
    good_files = row["files"] - 1
    # An equal share from each file (2 here): the two-minute recording does not crowd out the short clips.
    assert good_files == 25 and good_files <= row["windows"] <= 40
    assert [path for path, _ in row["failed"]] == [str(folder / "broken.wav")]
    assert 0.99 < row["min_cosine"] <= row["mean_cosine"] < 1.0
    assert row["k"] == 10 and 0.8 < row["shared_neighbours"] <= 1.0
    assert row["reference_s"] > 0 and row["candidate_s"] > 0
    text = cli_run(*compare).output
    assert "onnxruntime-int8 against torch" in text and "skipped" in text and "same nearest:" in text


def test_demo_builds_a_catalog_and_answers_a_search(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--model", "dsp-logmel"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "indexed 25" in result.output
    rank_one = [line for line in result.output.splitlines() if line.strip().startswith("1 ")][0]
    assert "field-recording.flac" in rank_one
    assert "datasette audiosim-demo/audiosim.db" in result.output


@pytest.mark.parametrize("model", ["aisfx", "panns-cnn14"])
@pytest.mark.parametrize("offset", [13.4, 37.3, 81.8])
def test_two_second_crop_of_a_long_file_finds_it_at_the_right_offset(
    tmp_path, corpus, long_recording, panns_model_dir, model, offset
):
    """Done-when: a 2 s crop of an indexed 2-minute file comes back at rank 1, offset within one hop."""
    args = ["--catalog", tmp_path / "c.db", "--milvus", tmp_path / "v.db", "--model-dir", panns_model_dir]
    path, audio = long_recording
    folder = tmp_path / "sounds"
    (folder / "recordings").mkdir(parents=True)
    os.symlink(path, folder / "recordings" / "long.flac")
    for sub in ("tone", "noise", "chirp", "clicks"):
        os.symlink(corpus / sub, folder / sub)
    result = cli_run("index", folder, "--model", model, *args)
    assert result.exit_code == 0, result.output
    crop = write(tmp_path / "crop.wav", audio[int(offset * SR) : int((offset + 2.0) * SR)])
    result = cli_run("search", crop, "--json", "-n", "3", *args)
    top = json_lines(result.output)[0]
    assert top["path"].endswith("long.flac")
    assert abs(top["offset_s"] - offset) <= 1.0  # the hop


@pytest.mark.parametrize("model", ["aisfx", "panns-cnn14", "dsp-logmel"])
def test_a_64_kbit_mp3_copy_finds_its_original(tmp_path, corpus, panns_model_dir, model):
    args = ["--catalog", tmp_path / "c.db", "--milvus", tmp_path / "v.db", "--model-dir", panns_model_dir]
    assert cli_run("index", corpus, "--model", model, *args).exit_code == 0
    for original in ["chirp/chirp-2.wav", "clicks/clicks-3.wav", "chord/chord-1.wav", "noise/noise-4.wav"]:
        import soundfile

        audio, sr = soundfile.read(corpus / original, dtype="float32")
        mp3 = tmp_path / "copy.mp3"
        encode_with_pyav(mp3, audio, sr, "libmp3lame", "mp3", bit_rate=64000)
        result = cli_run("search", mp3, "--json", "-n", "1", *args)
        assert json_lines(result.output)[0]["path"] == str(corpus / original), original


def test_a_store_held_by_another_process_is_explained(tmp_path, sounds):
    store = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from audiosim.vectors import VectorStore
            VectorStore({str(store)!r}); print("ready", flush=True); time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = cli_run("index", sounds, "--catalog", tmp_path / "c.db", "--milvus", store, "--model", "dsp-logmel")
        assert result.exit_code == 1
        assert "is open in another process" in result.output and "--milvus http://" in result.output
    finally:
        holder.kill()
        holder.wait()


def test_unreachable_milvus_server_and_mysql_fail_clearly(tmp_path, sounds):
    result = cli_run(
        "index", sounds, "--catalog", tmp_path / "c.db", "--milvus", "http://127.0.0.1:9", "--model", "dsp-logmel"
    )
    assert result.exit_code == 1 and "Cannot use the Milvus server at http://127.0.0.1:9" in result.output
    result = cli_run("stats", "--catalog", "mysql://root:s3cret@127.0.0.1:9/x")
    assert result.exit_code == 1 and "Cannot reach MySQL catalog mysql://root:***@127.0.0.1:9/x" in result.output
    assert "s3cret" not in result.output  # no secrets in messages


def test_a_catalog_keeps_the_hop_it_was_built_with(tmp_path, long_recording, sounds):
    """--hop 2 embeds each second once: half the vectors of the default hop, and later runs keep it."""
    path, audio = long_recording
    coarse = ["--catalog", tmp_path / "coarse.db", "--milvus", tmp_path / "coarse-v.db", "--model", "dsp-logmel"]
    fine = ["--catalog", tmp_path / "fine.db", "--milvus", tmp_path / "fine-v.db", "--model", "dsp-logmel"]
    result = cli_run("index", path, "--hop", "2", *coarse)
    assert result.exit_code == 0, result.output
    assert "windows of 2 s every 2 s" in result.output
    stats = json.loads(cli_run("stats", "--json", *coarse).stdout)
    assert stats["segments"] == 60 and stats["windows"] == "2 s every 2 s"  # starts 0, 2, ... 118
    assert cli_run("index", path, *fine).exit_code == 0
    assert json.loads(cli_run("stats", "--json", *fine).stdout)["segments"] == 119  # starts 0, 1, ... 118

    refused = cli_run("index", sounds, "--hop", "1", *coarse)
    assert refused.exit_code == 1 and "cuts a window every 2 s" in refused.output
    assert json.loads(cli_run("stats", "--json", *coarse).stdout)["clips"] == 1  # nothing indexed at another hop
    later = write(tmp_path / "later.flac", collage(10.5, seed=3))
    kept = json.loads(cli_run("index", later, "--json", *coarse).stdout)
    assert kept["indexed"] == 1 and kept["segments"] == 6  # 0, 2, 4, 6, 8 and the tail at 8.5 (10 at a 1 s hop)
    assert kept["engine"] == "numpy"  # what embedded it: dsp-logmel runs on numpy

    offset = 37.3
    crop = write(tmp_path / "crop.wav", audio[int(offset * SR) : int((offset + 2.0) * SR)])
    top = json_lines(cli_run("search", crop, "--json", "-n", "1", *coarse).output)[0]
    assert top["path"] == str(path) and top["offset_s"] % 2 == 0  # a window starts every 2 s in this catalog

    too_long = cli_run("index", sounds, "--hop", "3", "--catalog", tmp_path / "new.db", "--model", "dsp-logmel")
    assert too_long.exit_code == 1 and "at most 2 s, not 3" in too_long.output
    assert cli_run("index", sounds, "--hop", "0", *fine).exit_code == 2  # not a hop at all
