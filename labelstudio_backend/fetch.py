"""Turn a task's audio reference into a local file: a path, a Label Studio /data/ URL, or any http(s) URL."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from audiosim import AudioSimError

MAX_DOWNLOAD = 2 * 1024**3


class FetchError(AudioSimError):
    """A task's audio could not be fetched."""


def local_audio(
    reference: str,
    label_studio_url: str | None,
    token: str | None,
    cache_dir: Path,
    local_files_root: Path | None = None,
) -> str:
    if not isinstance(reference, str) or not reference:
        raise FetchError("the task has no audio reference")
    parsed = urllib.parse.urlsplit(reference)
    if parsed.path.startswith("/data/local-files") and local_files_root is not None:
        relative = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
        candidate = (local_files_root / relative).resolve()
        if candidate.is_relative_to(local_files_root.resolve()) and candidate.is_file():
            return str(candidate)  # served by this machine's Local Storage: no download needed
    if parsed.scheme in ("http", "https"):
        return _download(reference, token if _same_origin(reference, label_studio_url) else None, cache_dir)
    if reference.startswith("/data/") or reference.startswith("/storage-data/"):
        if not label_studio_url:
            raise FetchError(f"{reference} is a Label Studio URL, but LABEL_STUDIO_URL is not set")
        return _download(label_studio_url + reference, token, cache_dir)
    if os.path.isabs(reference) and os.path.isfile(reference):
        return reference
    raise FetchError(f"cannot fetch audio from {reference!r}")


def _same_origin(url: str, base: str | None) -> bool:
    if not base:
        return False
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def open_with_token(url: str, token: str | None, timeout: float):
    """urlopen with Label Studio's credentials. It accepts legacy tokens as "Token x" and JWT access tokens as
    "Bearer x": try the likelier scheme first, the other after a 401/403. Raises FetchError with the reason."""
    schemes = (["Bearer", "Token"] if token.count(".") == 2 else ["Token", "Bearer"]) if token else [None]
    error = None
    for scheme in schemes:
        request = urllib.request.Request(url, headers={"Authorization": f"{scheme} {token}"} if scheme else {})
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
            if e.code not in (401, 403):
                break
        except (urllib.error.URLError, OSError) as e:
            error = str(getattr(e, "reason", e))
            break
    raise FetchError(f"{url}: {error}")


def _download(url: str, token: str | None, cache_dir: Path) -> str:
    suffix = os.path.splitext(urllib.parse.urlsplit(url).path)[1][:8] or ".audio"
    target = cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + suffix)
    if target.is_file() and target.stat().st_size:
        return str(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with open_with_token(url, token, timeout=60) as response, open(part, "wb") as out:
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > MAX_DOWNLOAD:
                    raise FetchError(f"{url} is larger than {MAX_DOWNLOAD} bytes")
                out.write(chunk)
    except OSError as e:
        raise FetchError(f"cannot download {url}: {e}") from e
    os.replace(part, target)
    return str(target)
