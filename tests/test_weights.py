"""``models fetch``: a real HTTP download from a local server (Range support, interruptions, bad checksums)."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading

import pytest
from click.testing import CliRunner

from audiosim.cli import cli
from audiosim.errors import AudioSimError, ChecksumMismatch
from audiosim.weights import Checkpoint, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class FileServer(http.server.ThreadingHTTPServer):
    """Serves PAYLOAD at /ckpt.pth with HTTP Range support; can cut a response short to simulate a dropped link."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.ranges: list[str | None] = []
        self.cut_after: int | None = None
        self.honour_range = True
        self.payload = PAYLOAD

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/ckpt.pth"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server: FileServer = self.server
        if self.path != "/ckpt.pth":
            self.send_error(404)
            return
        header = self.headers.get("Range")
        server.ranges.append(header)
        start = 0
        if header and server.honour_range:
            start = int(re.match(r"bytes=(\d+)-", header).group(1))
            if start >= len(server.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
        else:
            self.send_response(200)
        body = server.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            self.wfile.write(body[: server.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)  # drop the connection mid-body
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def checkpoint(server):
    return Checkpoint("ckpt.pth", server.url, hashlib.md5(PAYLOAD).hexdigest())


def test_download_with_progress_and_checksum(server, checkpoint, tmp_path):
    seen = []
    path = fetch(checkpoint, tmp_path / "models", progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == PAYLOAD and path.name == "ckpt.pth"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    assert not list((tmp_path / "models").glob("*.part"))
    fetch(checkpoint, tmp_path / "models")  # already there and verified: no second request
    assert len(server.ranges) == 1


def test_interrupted_download_resumes_with_a_range_request(server, checkpoint, tmp_path):
    server.cut_after = 300_000
    with pytest.raises(AudioSimError, match="resume"):
        fetch(checkpoint, tmp_path)
    part = tmp_path / "ckpt.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD) and not (tmp_path / "ckpt.pth").exists()
    server.cut_after = None
    path = fetch(checkpoint, tmp_path)
    assert server.ranges[-1] == f"bytes={part.stat().st_size if part.exists() else 300_000}-"
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(server, checkpoint, tmp_path):
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD[:1000])
    server.honour_range = False
    assert fetch(checkpoint, tmp_path).read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_downloading(server, checkpoint, tmp_path):
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD)
    assert fetch(checkpoint, tmp_path).read_bytes() == PAYLOAD  # the server answers 416


def test_wrong_checksum_removes_the_file(server, tmp_path):
    bad = Checkpoint("ckpt.pth", server.url, "0" * 32)
    with pytest.raises(ChecksumMismatch, match="does not match"):
        fetch(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_http_errors_are_clear(server, tmp_path):
    missing = Checkpoint("x.pth", server.url.replace("ckpt.pth", "missing"), "0" * 32)
    with pytest.raises(AudioSimError, match="HTTP 404"):
        fetch(missing, tmp_path)
    closed = Checkpoint("x.pth", "http://127.0.0.1:9/x.pth", "0" * 32)
    with pytest.raises(AudioSimError, match="failed"):
        fetch(closed, tmp_path)


def test_cli_models_fetch_from_a_mirror(server, tmp_path, monkeypatch):
    """The CLI path, pointed at the local server with --url; the published MD5 still applies, so the
    1 MiB stand-in payload is refused as not being the Cnn14 checkpoint."""
    result = CliRunner().invoke(
        cli, ["models", "--model-dir", str(tmp_path), "fetch", "panns-cnn14", "--url", server.url]
    )
    assert result.exit_code == 1
    assert "does not match the published 541141fa2ee191a88f24a3219fff024e" in result.output
    unknown = CliRunner().invoke(cli, ["models", "fetch", "no-such"])
    assert unknown.exit_code == 2 and "fetchable: panns-cnn14" in unknown.output
