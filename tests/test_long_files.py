"""A two-hour recording is indexed in bounded memory: streamed in blocks, never decoded whole."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

from audiosim.synth import collage

AUDIOSIM = str(Path(sys.executable).with_name("audiosim"))


@pytest.mark.slow
def test_two_hour_recording_indexes_in_bounded_memory(tmp_path):
    path = tmp_path / "two-hours.flac"
    with soundfile.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        for minute in range(120):
            f.write(collage(60.0, seed=minute, sr=8000))
    # Measure through a small wrapper process: Linux counts a forked child's pre-exec memory (here, all of
    # pytest's) in its peak RSS, so the indexer must be forked from something small.
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            wrapper,
            AUDIOSIM,
            "index",
            str(path),
            "--catalog",
            str(tmp_path / "c.db"),
            "--model",
            "dsp-logmel",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    # The decoded audio alone would be 7200 s x 16 kHz x 4 bytes = 461 MB; the process stays well under 1.5 GB.
    assert peak_kib < 1.5 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    with sqlite3.connect(tmp_path / "c.db") as conn:
        duration, segments = conn.execute("select duration_s, segment_count from clips").fetchone()
    assert duration == pytest.approx(7200.0, abs=0.1) and segments == 7199
