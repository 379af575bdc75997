"""Send a catalogued audio file with HTTP Range support, so browsers can seek."""

from __future__ import annotations

import os
import re

import aiofiles

CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wave": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".aifc": "audio/aiff",
    ".webm": "audio/webm",
    ".caf": "audio/x-caf",
    ".au": "audio/basic",
    ".snd": "audio/basic",
    ".wma": "audio/x-ms-wma",
    ".mka": "audio/x-matroska",
}
CHUNK = 256 * 1024


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive) for a single satisfiable range; None for no/ignored range; "unsatisfiable"."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or not (match.group(1) or match.group(2)):
        return None  # malformed or multi-range: answer with the whole file, as RFC 9110 allows
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return start, end


async def send_file(send, path: str, range_header: str | None, extra_headers: dict | None = None) -> None:
    size = os.path.getsize(path)
    headers = {"accept-ranges": "bytes", "content-type": content_type(path), **(extra_headers or {})}
    wanted = parse_range(range_header, size)
    if wanted == "unsatisfiable":
        headers["content-range"] = f"bytes */{size}"
        await _start(send, 416, headers)
        await send({"type": "http.response.body", "body": b""})
        return
    status, start, end = (206, *wanted) if wanted else (200, 0, size - 1)
    if wanted:
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    headers["content-length"] = str(end - start + 1)
    await _start(send, status, headers)
    left = end - start + 1
    async with aiofiles.open(path, "rb") as f:
        await f.seek(start)
        while left > 0:
            chunk = await f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
    if left > 0:  # the file shrank while we sent it
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _start(send, status: int, headers: dict) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [[k.encode("latin1"), v.encode("latin1")] for k, v in headers.items()],
        }
    )
