"""SIGKILL the real indexer at many moments of a run, and at each write of a clip mid-batch; the next run must leave
every file indexed exactly once, with catalog and vectors agreeing and searches right."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audiosim import Settings
from audiosim.service import AudioSim
from audiosim.synth import KINDS, sound, write

AUDIOSIM = str(Path(sys.executable).with_name("audiosim"))


def ready_clips(catalog) -> int:
    if not catalog.exists():
        return 0
    with sqlite3.connect(catalog) as conn:
        try:
            return conn.execute("select count(*) from clips where status = 'ready'").fetchone()[0]
        except sqlite3.OperationalError:  # killed before the schema existed
            return 0


@pytest.mark.slow
def test_sigkill_at_many_moments_then_resume(tmp_path):
    folder = tmp_path / "sounds"
    for i in range(60):
        write(folder / f"{i:03d}-{KINDS[i % 6]}.wav", sound(KINDS[i % 6], 1.0 + (i % 5), seed=i))
    catalog, store = tmp_path / "c.db", tmp_path / "v.db"
    command = [
        AUDIOSIM,
        "index",
        str(folder),
        "--catalog",
        str(catalog),
        "--milvus",
        str(store),
        "--model",
        "aisfx",
        "--json",
    ]
    progress_at_kill = []
    for delay in (2.5, 3.5, 4.5, 5.5, 7.0):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            progress_at_kill.append(ready_clips(catalog))
        process.wait()
    # At least one kill landed mid-ingest (some files done, some not): the test exercised a real crash.
    assert any(0 < done < 60 for done in progress_at_kill), progress_at_kill
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr

    with sqlite3.connect(catalog) as conn:
        paths = [row[0] for row in conn.execute("select path from clips where status = 'ready'")]
        assert conn.execute("select count(*) from clips where status <> 'ready'").fetchone()[0] == 0
    assert sorted(paths) == sorted(str(p) for p in folder.iterdir())  # every file exactly once
    with AudioSim(Settings(str(catalog), str(store))) as sim:
        report = sim.verify()
        assert report.ok, report.problems
        stats = sim.stats()
        assert stats["vectors"] == stats["segments"]
        for wav in sorted(folder.iterdir())[::7]:
            assert sim.search_file(wav, k=1)[0].clip.path == str(wav)


# The real indexer, SIGKILLed at one precise write: the Nth call of a catalog or vector-store method, just before
# or just after it runs. Nothing is replaced; the process simply dies there.
KILL_AT = textwrap.dedent(
    """
    import functools, os, signal, sys
    from audiosim import catalog, vectors
    cls = {"catalog": catalog.Catalog, "store": vectors.VectorStore}[sys.argv[1]]
    method, when, nth = sys.argv[2], sys.argv[3], int(sys.argv[4])
    original, calls = getattr(cls, method), [0]

    @functools.wraps(original)
    def dying(self, *args, **kwargs):
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(self, *args, **kwargs)
        if when == "after" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, method, dying)
    from audiosim.cli import cli
    cli(sys.argv[5:])
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "target,method,when,nth",
    # The 20 clips below make 35 windows: three batches of 16, which finish clips 1-9, 10-18 and 19-20. Each
    # batch's clips are written together, so the kill lands in the second batch, with the first batch's clips
    # ready and the third's not yet read.
    [
        ("catalog", "begin_clip", "after", 12),  # the batch's clips going pending, uncommitted
        ("store", "upsert", "before", 2),  # pending, the batch's vectors not written
        ("store", "upsert", "after", 2),  # vectors written, catalog not told
        ("catalog", "finish_clip", "before", 10),  # the same, one step later
        ("catalog", "finish_clip", "after", 18),  # every clip of the batch finished, the commit not yet made
    ],
)
def test_sigkill_at_each_write_of_a_clip_mid_batch_then_resume(tmp_path, target, method, when, nth):
    folder = tmp_path / "sounds"
    for i in range(20):
        write(folder / f"{i:02d}.wav", sound(KINDS[i % 6], 1.0 + (i % 4), seed=i))
    catalog, store = tmp_path / "c.db", tmp_path / "v.db"
    args = ["index", str(folder), "--catalog", str(catalog), "--milvus", str(store), "--model", "dsp-logmel"]
    killed = subprocess.run([sys.executable, "-c", KILL_AT, target, method, when, str(nth), *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert ready_clips(catalog) == 9  # the first batch's, and nothing of the batch that was cut short
    finished = subprocess.run([AUDIOSIM, *args], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    with sqlite3.connect(catalog) as conn:
        paths = sorted(row[0] for row in conn.execute("select path from clips where status = 'ready'"))
        assert conn.execute("select count(*) from clips where status <> 'ready'").fetchone()[0] == 0
    assert paths == sorted(str(p) for p in folder.iterdir())  # every file exactly once
    with AudioSim(Settings(str(catalog), str(store))) as sim:
        report = sim.verify()
        assert report.ok, report.problems
        assert sim.stats()["vectors"] == sim.stats()["segments"]
        for wav in sorted(folder.iterdir())[::3]:
            assert sim.search_file(wav, k=1)[0].clip.path == str(wav)


@pytest.mark.slow
def test_sigkill_after_a_long_recordings_first_vectors_then_resume(tmp_path):
    """A long recording's vectors are written as its windows are embedded (every 8 here), before its end: killed
    after the first such write, it is pending with those vectors stored; the next run redoes it whole."""
    from audiosim.synth import collage

    folder = tmp_path / "sounds"
    write(folder / "long.wav", collage(40.0, seed=3), 32000)  # 39 windows: batches of 16, 16 and 7
    catalog, store = tmp_path / "c.db", tmp_path / "v.db"
    args = ["index", str(folder), "--catalog", str(catalog), "--milvus", str(store), "--model", "dsp-logmel"]
    script = "from audiosim import ingest; ingest.LONG_CLIP_WRITE = 8\n" + KILL_AT
    killed = subprocess.run([sys.executable, "-c", script, "store", "upsert", "after", "1", *args], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    with sqlite3.connect(catalog) as conn:
        assert conn.execute("select status from clips").fetchall() == [("pending",)]
    stats = subprocess.run([AUDIOSIM, "stats", "--json", *args[2:]], capture_output=True, text=True, timeout=120)
    assert json.loads(stats.stdout)["vectors"] == 16  # the first batch's windows, written before the clip's end

    finished = subprocess.run([AUDIOSIM, *args], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    with AudioSim(Settings(str(catalog), str(store))) as sim:
        report = sim.verify()
        assert report.ok, report.problems
        stats = sim.stats()
        assert stats["clips"] == 1 and stats["vectors"] == stats["segments"] == 39
        hit = sim.search_file(folder / "long.wav", k=1)[0]
        assert hit.clip.path == str(folder / "long.wav")


@pytest.mark.slow
@pytest.mark.mysql
@pytest.mark.server
def test_two_indexers_at_once_on_mysql_and_a_milvus_server(tmp_path, mysql_url, milvus_server):
    """A shared deployment: two indexers over the same folder at the same time, no duplicates, nothing lost."""
    from conftest import drop_collections_of

    folder = tmp_path / "sounds"
    for i in range(60):
        write(folder / f"{i:03d}.wav", sound(KINDS[i % 6], 1.0 + (i % 4), seed=i))
    command = [
        AUDIOSIM,
        "index",
        str(folder),
        "--catalog",
        mysql_url,
        "--milvus",
        milvus_server,
        "--model",
        "dsp-logmel",
        "--json",
    ]
    settings = Settings(mysql_url, milvus_server, model="dsp-logmel")
    try:
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=600) for run in runs]
        for run, (out, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, out + err
        with AudioSim(settings) as sim:
            rows = sim.catalog._execute("SELECT path, status FROM clips")
            assert sorted(path for path, _ in rows) == sorted(str(p) for p in folder.iterdir())  # each once
            assert {status for _, status in rows} == {"ready"}
            report = sim.verify()
            assert report.ok, report.problems
            stats = sim.stats()
            assert stats["clips"] == 60 and stats["vectors"] == stats["segments"]
    finally:
        drop_collections_of(settings)
