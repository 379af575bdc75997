"""A generated hostile corpus, indexed in one run: each file is either embedded correctly or reported with a
reason, the batch always finishes, and a second run changes nothing."""

from __future__ import annotations

import os
import struct
import threading
import time

import numpy as np
import pytest
import soundfile

from audiosim.decode import display_path
from audiosim.service import AudioSim
from audiosim.synth import SR, sound, write


def wav_claiming_2_31_frames(path):
    """A 16-bit mono WAV whose header promises 2^31 frames over one second of real samples."""
    pcm = (sound("tone", 1.0, seed=3) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, SR, SR * 2, 2, 16)
    data = struct.pack("<4sI", b"data", 2**32 - 2)
    path.write_bytes(b"RIFF" + struct.pack("<I", 2**32 - 1) + b"WAVE" + fmt + data + pcm)


def truncated(path, fmt, **kwargs):
    write(path, sound("chord", 4.0, seed=5), SR, format=fmt, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def aac(path):
    from test_decode import encode_with_pyav

    encode_with_pyav(path, sound("hum", 2.0, seed=8, sr=44100), 44100, "aac", "mp4")


def build(folder):
    """Each kind of hostile file -> what must come of it: "ok" (embedded) or a word of the failure's reason."""
    folder.mkdir()
    expect = {}

    def add(name, outcome, make):
        path = folder / name if isinstance(name, str) else os.path.join(os.fsencode(folder), name)
        make(path)
        expect[display_path(path)] = outcome

    add("zero-bytes.wav", "empty", lambda p: p.write_bytes(b""))
    add("random-bytes.wav", "not a readable audio file", lambda p: p.write_bytes(np.random.default_rng(1).bytes(8192)))
    add("header-only.wav", "header-only.wav", lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "))
    add("truncated.wav", "ok", lambda p: truncated(p, "WAV"))
    add("truncated.flac", "ok", lambda p: truncated(p, "FLAC"))
    add("truncated.mp3", "ok", lambda p: truncated(p, "MP3"))
    add("flac-named.wav", "ok", lambda p: p.write_bytes(_encoded(folder, "FLAC")))
    add("text-named.mp3", "not a readable audio file", lambda p: p.write_text("hello, I am not audio\n" * 50))
    add("claims-2^31-frames.wav", "ok", wav_claiming_2_31_frames)
    nan = sound("noise", 2.0, seed=4)
    nan[::7] = np.nan
    nan[::11] = np.inf
    add("nan-inf.wav", "ok", lambda p: write(p, nan, SR, subtype="FLOAT"))
    add("0.05s.wav", "ok", lambda p: write(p, sound("clicks", 0.05, seed=2), SR))
    add("silence.wav", "ok", lambda p: write(p, np.zeros(SR * 3, np.float32), SR))
    add("8ch-192k.wav", "ok", lambda p: write(p, np.tile(sound("chirp", 1.0, seed=6, sr=192000)[:, None], 8), 192000))
    add("telephone-8k.wav", "ok", lambda p: write(p, sound("tone", 3.0, seed=7, sr=8000), 8000))
    add("aac.m4a", "ok", aac)
    add(b"caf\xe9-\xff-latin1.wav", "ok", lambda p: soundfile.write(p, sound("tone", 1.0, seed=9), SR))
    add("l" * 240 + ".wav", "ok", lambda p: write(p, sound("tone", 1.0, seed=10), SR))
    add("<script>alert(1)</script>.wav", "ok", lambda p: write(p, sound("noise", 1.0, seed=11), SR))
    add("unreadable.wav", "ok" if os.geteuid() == 0 else "permission", lambda p: _unreadable(p))
    add("fifo.wav", "not a regular file", lambda p: os.mkfifo(p))
    add("broken-link.wav", "broken or looping symlink", lambda p: os.symlink(folder / "nowhere.wav", p))
    add("loop-a.wav", "symbolic links", lambda p: os.symlink(folder / "loop-b.wav", p))
    os.symlink(folder / "loop-a.wav", folder / "loop-b.wav")
    expect[str(folder / "loop-b.wav")] = "symbolic links"
    (folder / "dir-named.wav").mkdir()  # a folder named like a file: walked, not decoded
    add("dir-named.wav/inside.flac", "ok", lambda p: write(p, sound("hum", 1.5, seed=12), SR))
    os.symlink(folder, folder / "dir-named.wav" / "back-to-top")  # a folder loop: walked once
    add("growing.wav", "ok", lambda p: write(p, sound("chord", 2.0, seed=13), SR))
    return expect


def _encoded(folder, fmt):
    path = folder / f".tmp.{fmt.lower()}"
    write(path, sound("chirp", 2.0, seed=14), SR, format=fmt)
    data = path.read_bytes()
    path.unlink()
    return data


def _unreadable(path):
    write(path, sound("tone", 1.0, seed=15), SR)
    path.chmod(0)


def keep_rewriting(path, stop):
    """A file that changes while it is being read: rewritten with a new length again and again."""
    seed = 0
    while not stop.is_set():
        seed += 1
        write(path, sound("noise", 1.0 + seed % 3, seed=seed), SR)
        time.sleep(0.01)


@pytest.mark.slow
def test_every_hostile_file_is_embedded_or_reported_and_the_batch_finishes(tmp_path, lite_settings):
    folder = tmp_path / "hostile"
    expect = build(folder)
    assert len(expect) >= 24
    stop = threading.Event()
    writer = threading.Thread(target=keep_rewriting, args=(folder / "growing.wav", stop), daemon=True)
    writer.start()
    try:
        with AudioSim(lite_settings) as sim:
            report = sim.index([folder])
    finally:
        stop.set()
        writer.join()

    failed = dict(report.failed)
    growing = str(folder / "growing.wav")
    outcome = {}
    for path, want in expect.items():
        outcome[path] = "ok" if path in report.indexed else failed.get(path, "missing from the report")
        if path == growing and outcome[path].endswith("is empty (0 bytes)"):
            continue  # read between the writer's truncation and its write: truly empty then, and said so
        if want == "ok":
            assert outcome[path] == "ok", f"{path}: {outcome[path]}"
        else:
            assert want in outcome[path], f"{path}: expected a failure about {want!r}, got {outcome[path]!r}"
    assert len(report.indexed) + len(report.failed) == len(expect)

    with AudioSim(lite_settings) as sim:
        assert sim.verify().ok
        assert sim.stats()["clips"] == len(report.indexed)
        again = sim.index([folder])
    # Only the file that kept changing after the first run read it is embedded again (its final version).
    assert set(again.indexed) <= {growing} and set(dict(again.failed)) - {growing} == set(failed) - {growing}
