"""Decoding real files in many formats, and cutting them into windows without holding them whole."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

from audiosim.decode import display_path, load, probe, read_blocks
from audiosim.errors import DecodeError
from audiosim.segments import cut_windows
from audiosim.synth import sound, write

SR = 32000


def dominant_hz(audio: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[spectrum.argmax()])


def tone(hz=440.0, seconds=1.0, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode_with_pyav(path, audio, sr, codec, container_format, bit_rate=64000):
    """Encode mono float audio with FFmpeg (through PyAV): how the tests make m4a/aac and 64 kbit/s mp3."""
    import av

    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=sr)
        stream.bit_rate = bit_rate
        stream.layout = "mono"
        frame_size = stream.codec_context.frame_size or 1024
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=sr)
        for start in range(0, len(audio), frame_size):
            chunk = np.ascontiguousarray(audio[start : start + frame_size], dtype=np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = sr
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("a.wav", {}),
        ("a.flac", {}),
        ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}),
        ("a.opus", {"format": "OGG", "subtype": "OPUS"}),
        ("a.mp3", {"format": "MP3"}),
        ("a.aiff", {}),
    ],
)
def test_soundfile_formats_decode_to_the_right_pitch_and_rate(tmp_path, name, kwargs):
    rate = 48000 if "opus" in name else 44100
    path = write(tmp_path / name, tone(440, 2.0, rate), rate, **kwargs)
    audio = load(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(2.0 * 16000, rel=0.03)  # codecs may pad a little
    assert dominant_hz(audio, 16000) == pytest.approx(440, abs=5)


@pytest.mark.parametrize("name,codec,fmt", [("a.m4a", "aac", "mp4"), ("b.mp3", "libmp3lame", "mp3")])
def test_pyav_formats_decode(tmp_path, name, codec, fmt):
    path = tmp_path / name
    encode_with_pyav(path, tone(660, 2.0, 44100), 44100, codec, fmt)
    if name.endswith(".m4a"):
        with pytest.raises(soundfile.LibsndfileError):
            soundfile.info(str(path))  # so this really goes through the PyAV path
    audio = load(path, SR)
    assert dominant_hz(audio, SR) == pytest.approx(660, abs=5)
    assert probe(path).sample_rate == 44100


def test_stereo_is_downmixed_and_info_is_read(tmp_path):
    stereo = np.stack([tone(300), tone(300)], axis=1)
    path = write(tmp_path / "s.wav", stereo, SR)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.format) == (SR, 2, "wav")
    assert info.duration_s == pytest.approx(1.0)
    assert np.allclose(load(path, SR), tone(300), atol=1e-4)


def test_nan_and_inf_samples_are_zeroed(tmp_path):
    audio = tone(300)
    audio[100:200] = np.nan
    audio[300] = np.inf
    path = write(tmp_path / "nan.wav", audio, SR, subtype="FLOAT")
    out = load(path, SR)
    assert np.isfinite(out).all() and (out[100:200] == 0).all()


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not a readable audio file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "bad.wav"),
        (lambda p: None, "cannot be read"),
    ],
    ids=["zero-bytes", "random-bytes", "directory", "header-only", "missing"],
)
def test_bad_files_raise_decode_error_with_a_reason(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(DecodeError, match=message):
        load(path, SR)


def test_truncated_file_keeps_what_is_there_or_fails_clearly(tmp_path):
    path = write(tmp_path / "t.flac", tone(440, 3.0), SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        audio = load(path, SR)
    except DecodeError as e:
        assert "t.flac" in str(e)
    else:
        assert 0 < len(audio) < 3 * SR


def test_non_utf8_file_name(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.wav")
    soundfile.write(raw, tone(), SR)
    name = os.fsdecode(raw)
    assert len(load(name, SR)) == SR
    assert display_path(name).endswith("caf\\xe9-\\xff.wav")


def test_short_and_silent_clips_decode(tmp_path):
    short = write(tmp_path / "short.wav", tone(1000, 0.05), SR)
    silent = write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    assert len(load(short, SR)) == int(0.05 * SR)
    assert not load(silent, SR).any()


def test_long_files_stream_in_bounded_blocks(tmp_path):
    path = write(tmp_path / "long.wav", np.tile(tone(220, 1.0, 8000), 600), 8000)  # ten minutes at 8 kHz
    sizes = [len(b) for b in read_blocks(path, 32000, block_s=30.0)]
    assert sum(sizes) == pytest.approx(600 * 32000, abs=64)
    assert max(sizes) <= 30.5 * 32000  # one block (plus the resampler's delay), never the whole file


@pytest.mark.parametrize("seconds", [0.05, 1.0, 2.0, 2.5, 10.0, 10.3])
@pytest.mark.parametrize("block", [1, 777, 32000])
def test_cut_windows_matches_a_direct_slicing(seconds, block):
    sr, win_s, hop_s = 1000, 2.0, 1.0
    audio = np.arange(int(seconds * sr), dtype=np.float32)
    blocks = [audio[i : i + block] for i in range(0, len(audio), block)]
    windows = list(cut_windows(blocks, sr, win_s, hop_s))
    n, win, hop = len(audio), int(win_s * sr), int(hop_s * sr)
    if n <= win:
        expected_starts = [0]
    else:
        expected_starts = list(range(0, n - win + 1, hop))
        if expected_starts[-1] + win < n:
            expected_starts.append(n - win)  # the tail, aligned to the end
    assert [int(w.start_s * sr) for w in windows] == expected_starts
    for w in windows:
        start = int(w.start_s * sr)
        assert np.array_equal(w.samples, audio[start : start + min(win, n)])
    assert windows[-1].end_s == pytest.approx(seconds)


def test_sound_kinds_are_deterministic():
    assert np.array_equal(sound("chirp", 1.0, seed=3), sound("chirp", 1.0, seed=3))
    assert not np.array_equal(sound("chirp", 1.0, seed=3), sound("chirp", 1.0, seed=4))
