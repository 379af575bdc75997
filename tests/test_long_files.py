"""A two-hour recording is indexed in bounded memory: streamed in blocks, never decoded whole."""

from __future__ import annotations

import os
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
    process = subprocess.Popen(
        [AUDIOSIM, "index", str(path), "--catalog", str(tmp_path / "c.db"), "--model", "dsp-logmel"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not the session's other children
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, output
    peak_kib = usage.ru_maxrss
    # The decoded audio alone would be 7200 s x 16 kHz x 4 bytes = 461 MB; the process stays well under 1.5 GB.
    assert peak_kib < 1.5 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    with sqlite3.connect(tmp_path / "c.db") as conn:
        duration, segments = conn.execute("select duration_s, segment_count from clips").fetchone()
    assert duration == pytest.approx(7200.0, abs=0.1) and segments == 7199
