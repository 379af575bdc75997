"""Find the audio files under some paths, and name them: display text, raw bytes, and a stable key."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

from .decode import display_path

AUDIO_EXTENSIONS = {
    ".wav",
    ".wave",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".aif",
    ".aiff",
    ".aifc",
    ".caf",
    ".w64",
    ".rf64",
    ".au",
    ".snd",
    ".wma",
    ".mka",
    ".webm",
    ".mp4",
    ".3gp",
    ".amr",
    ".ac3",
    ".wv",
}


def is_audio_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


def audio_files(paths: Iterable[str | os.PathLike], problems: list[tuple[str, str]]) -> Iterator[str]:
    """Audio files under ``paths`` in a stable order. A file named directly is always tried; inside folders only
    audio extensions count and hidden entries are skipped. Symlink loops and unreadable folders land in
    ``problems`` as (path, reason) instead of stopping the walk."""
    seen_dirs: set[tuple[int, int]] = set()
    for given in paths:
        path = os.path.abspath(os.fspath(given))
        if os.path.isdir(path):
            yield from _walk(path, seen_dirs, problems)
        elif os.path.lexists(path):
            yield path
        else:
            problems.append((display_path(path), "no such file or folder"))


def _walk(top: str, seen_dirs: set, problems: list) -> Iterator[str]:
    try:
        st = os.stat(top)
    except OSError as e:
        problems.append((display_path(top), f"cannot read folder ({e.strerror})"))
        return
    if (st.st_dev, st.st_ino) in seen_dirs:
        return  # reached again through a symlink: a loop or an alias, walked once already
    seen_dirs.add((st.st_dev, st.st_ino))
    try:
        entries = sorted(os.scandir(top), key=lambda e: os.fsencode(e.name))
    except OSError as e:
        problems.append((display_path(top), f"cannot read folder ({e.strerror})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError as e:
            problems.append((display_path(entry.path), f"cannot read ({e.strerror})"))
            continue
        if is_dir:
            yield from _walk(entry.path, seen_dirs, problems)
        elif is_audio_name(entry.name):
            if entry.is_symlink() and not os.path.exists(entry.path):
                problems.append((display_path(entry.path), "broken or looping symlink"))
                continue
            yield entry.path


def path_key(path: str) -> str:
    """A fixed-length key for any absolute path, whatever its length or encoding (MySQL can index it)."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()


def content_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
