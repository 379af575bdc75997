"""Model checkpoints: where they come from, where they live, and a careful download.

Nothing here runs at import and nothing downloads on its own: ``fetch`` is called only by
``audiosim models fetch``. Downloads stream to a ``.part`` file (resumed with an HTTP Range request
after an interruption), are checked against the published MD5, then renamed into place atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import AudioSimError, ChecksumMismatch

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    filename: str
    url: str
    md5: str  # Zenodo publishes MD5 for every file


CHECKPOINTS = {
    "panns-cnn14": Checkpoint(
        "Cnn14_mAP=0.431.pth",
        "https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
        "541141fa2ee191a88f24a3219fff024e",
    ),
}


def fetch(
    checkpoint: Checkpoint,
    model_dir: Path,
    url: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``checkpoint`` into ``model_dir`` (resuming a partial download) and return its path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / checkpoint.filename
    if target.exists() and file_md5(target) == checkpoint.md5:
        return target
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url or checkpoint.url, headers={"User-Agent": "audiosim"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete
            return _finish(part, target, checkpoint)
        raise AudioSimError(f"Download of {checkpoint.filename} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise AudioSimError(f"Download of {checkpoint.filename} failed: {getattr(e, 'reason', e)}") from e
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out:
            done = have
            if progress:
                progress(done, total)
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            except (OSError, http.client.HTTPException) as e:
                raise _broke_off(checkpoint, done, str(e)) from e
    if total is not None and done < total:  # the connection closed early without an error
        raise _broke_off(checkpoint, done, f"expected {total} bytes")
    return _finish(part, target, checkpoint)


def _broke_off(checkpoint: Checkpoint, done: int, why: str) -> AudioSimError:
    return AudioSimError(
        f"Download of {checkpoint.filename} broke off at {done} bytes ({why}); run the same command to resume"
    )


def _finish(part: Path, target: Path, checkpoint: Checkpoint) -> Path:
    digest = file_md5(part)
    if digest != checkpoint.md5:
        part.unlink()
        raise ChecksumMismatch(
            f"{checkpoint.filename}: checksum {digest} does not match the published {checkpoint.md5}; "
            "the partial file was removed, run the command again"
        )
    os.replace(part, target)
    return target


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
