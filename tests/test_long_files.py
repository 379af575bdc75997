"""A two-hour recording is indexed in bounded memory: streamed in blocks, never decoded whole."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
import soundfile
from conftest import run_measuring_peak

from audiosim.synth import collage

AUDIOSIM = str(Path(sys.executable).with_name("audiosim"))


@pytest.mark.slow
def test_two_hour_recording_indexes_in_bounded_memory(tmp_path):
    path = tmp_path / "two-hours.flac"
    with soundfile.SoundFile(path, "w", 8000, 1, format="FLAC") as f:
        for minute in range(120):
            f.write(collage(60.0, seed=minute, sr=8000))
    result, peak_mib = run_measuring_peak(
        [AUDIOSIM, "index", str(path), "--catalog", str(tmp_path / "c.db"), "--model", "dsp-logmel"], timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The decoded audio alone would be 7200 s x 16 kHz x 4 bytes = 461 MB; the process stays well under 1.5 GB.
    assert peak_mib < 1.5 * 1024, f"peak RSS {peak_mib} MiB"
    with sqlite3.connect(tmp_path / "c.db") as conn:
        duration, segments = conn.execute("select duration_s, segment_count from clips").fetchone()
    assert duration == pytest.approx(7200.0, abs=0.1) and segments == 7199
