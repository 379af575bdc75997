"""Shared fixtures: generated audio, real Milvus (Lite and a standalone server), real MariaDB.

A service that is not reachable skips its tests locally but fails them in CI (CI=true), so CI can never
pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from audiosim import Settings
from audiosim.synth import collage, demo_corpus, sound, write

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MYSQL_HOST, MYSQL_PORT = "127.0.0.1", 3306
MILVUS_PORT = 19530


def pytest_collection_modifyitems(items):
    # Tests that stop and restart a shared service go last (a stable sort keeps the rest in order): nothing else
    # then runs against a service that is coming back.
    items.sort(key=lambda item: item.get_closest_marker("outage") is not None)


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: service-backed tests must not be skipped)")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def port_bindable(port: int) -> bool:
    """Whether ``milvus-server`` may take the port: it tries a bind without SO_REUSEADDR, which fails for up to a
    minute after a server is killed (its closed connections linger in TIME_WAIT)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- audio ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Six kinds of sound, four clips each, plus a two-minute collage (read-only: copy before changing)."""
    folder = tmp_path_factory.mktemp("corpus")
    demo_corpus(folder)
    return folder


@pytest.fixture
def sounds(tmp_path) -> Path:
    """A small writable folder of sounds for tests that change files."""
    folder = tmp_path / "sounds"
    for i, kind in enumerate(("tone", "noise", "chirp", "clicks", "chord", "hum")):
        write(folder / f"{kind}.wav", sound(kind, 1.5 + i * 0.25, seed=i))
    return folder


@pytest.fixture(scope="session")
def long_recording(tmp_path_factory):
    """(path, audio) of a two-minute recording whose every moment sounds different."""
    audio = collage(120.0, seed=7)
    path = write(tmp_path_factory.mktemp("long") / "long.flac", audio)
    return path, audio


# -- MariaDB / MySQL ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mysql_server():
    import pymysql

    try:
        conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", connect_timeout=3)
    except pymysql.err.MySQLError as e:
        unavailable(f"MariaDB/MySQL is not reachable on {MYSQL_HOST}:{MYSQL_PORT}: {e}")
    conn.close()
    return f"mysql://root:@{MYSQL_HOST}:{MYSQL_PORT}"


@pytest.fixture
def mysql_url(mysql_server):
    """A fresh, empty database for one test, dropped afterwards."""
    import pymysql

    name = f"audiosim_test_{uuid.uuid4().hex[:10]}"

    def connect():
        return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", autocommit=True)

    with connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    yield f"{mysql_server}/{name}"
    with connect() as conn, conn.cursor() as cur:  # a new connection: the test may have restarted the server
        cur.execute(f"DROP DATABASE IF EXISTS {name}")


# -- memory ------------------------------------------------------------------------------------------
PEAK_OF_CHILD = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def run_measuring_peak(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, int]:
    """Run a command; its result (the wrapper's peak line removed from stdout) and its peak RSS in MiB. It runs
    under a small wrapper process: Linux counts a forked child's pre-exec memory (here, all of pytest's) in the
    child's peak, so the command must be forked from something small."""
    done = subprocess.run([sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True, **kwargs)
    *lines, peak_kib = done.stdout.strip().splitlines()
    done.stdout = "\n".join(lines)
    return done, int(peak_kib) // 1024


# -- Milvus standalone server ------------------------------------------------------------------------
def milvus_server_binary() -> str | None:
    found = shutil.which("milvus-server") or str(Path(sys.executable).with_name("milvus-server"))
    return found if os.path.exists(found) else None


def wait_for_milvus(uri: str, seconds: float, process: subprocess.Popen | None = None) -> None:
    from pymilvus import MilvusClient

    deadline = time.monotonic() + seconds
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"milvus-server exited with status {process.returncode} before it answered")
        try:
            client = MilvusClient(uri=uri, timeout=5)
            client.list_collections()
            client.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class MilvusServer:
    """The real Milvus standalone from the PyPI package ``milvus``, in its own process group."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None
        self.uri = f"http://127.0.0.1:{MILVUS_PORT}"

    def start(self, wait_s: float = 120.0):
        binary = milvus_server_binary()
        if binary is None:
            unavailable("milvus-server is not installed (pip install milvus)")
        # Left to choose, the wrapper silently moves to the next port while 19530 is not yet free again.
        deadline = time.monotonic() + 90
        while not port_bindable(MILVUS_PORT) and time.monotonic() < deadline:
            time.sleep(1)
        log = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            [binary, "--data", str(self.data_dir), "--proxy-port", str(MILVUS_PORT)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_milvus(self.uri, wait_s, self.process)

    def kill(self):
        # The server ignores SIGTERM and its wrapper never notices the child die: SIGKILL the whole group.
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            self.process = None
        deadline = time.monotonic() + 30
        while port_open("127.0.0.1", MILVUS_PORT) and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="session")
def milvus_server_process(tmp_path_factory):
    """The session's Milvus server as a MilvusServer, which a test may kill and restart; None when
    AUDIOSIM_TEST_MILVUS names a server of your own."""
    if os.environ.get("AUDIOSIM_TEST_MILVUS"):
        wait_for_milvus(os.environ["AUDIOSIM_TEST_MILVUS"], 30)
        yield None
        return
    deadline = time.monotonic() + 30  # a server from a run that just ended may still be letting go of the port
    while port_open("127.0.0.1", MILVUS_PORT) and time.monotonic() < deadline:
        time.sleep(1)
    if port_open("127.0.0.1", MILVUS_PORT):
        unavailable(f"port {MILVUS_PORT} is taken by another process; stop it or set AUDIOSIM_TEST_MILVUS")
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    try:
        server.start()
    except Exception as e:
        server.kill()
        unavailable(f"Milvus server did not start: {e}")
    yield server
    server.kill()


@pytest.fixture(scope="session")
def milvus_server(milvus_server_process):
    """URI of a running Milvus server: AUDIOSIM_TEST_MILVUS if set, else one started for this session."""
    return milvus_server_process.uri if milvus_server_process else os.environ["AUDIOSIM_TEST_MILVUS"]


# -- backends ----------------------------------------------------------------------------------------
BACKENDS = [
    pytest.param(("sqlite", "lite"), id="sqlite-lite"),
    pytest.param(("mysql", "lite"), id="mysql-lite", marks=pytest.mark.mysql),
    pytest.param(("sqlite", "server"), id="sqlite-server", marks=pytest.mark.server),
    pytest.param(("mysql", "server"), id="mysql-server", marks=[pytest.mark.mysql, pytest.mark.server]),
]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Settings:
    """Settings for one catalog x vector store pair, using the fast weightless model."""
    catalog_kind, store_kind = request.param
    catalog = request.getfixturevalue("mysql_url") if catalog_kind == "mysql" else str(tmp_path / "catalog.db")
    milvus = request.getfixturevalue("milvus_server") if store_kind == "server" else str(tmp_path / "vectors.db")
    settings = Settings(catalog=catalog, milvus=milvus, model="dsp-logmel", model_dir=tmp_path / "models")
    yield settings
    if store_kind == "server":
        drop_collections_of(settings)


def drop_collections_of(settings: Settings) -> None:
    """Remove a test catalog's collection from the shared server so tests do not see each other."""
    from audiosim.catalog import open_catalog
    from audiosim.vectors import VectorStore

    with open_catalog(settings.catalog) as catalog:
        collection = catalog.collection()
    if collection:
        store = VectorStore(settings.milvus_uri)
        if store.has_collection(collection.name):
            store.drop_collection(collection.name)
        store.close()


@pytest.fixture
def lite_settings(tmp_path) -> Settings:
    return Settings(
        catalog=str(tmp_path / "catalog.db"),
        milvus=str(tmp_path / "vectors.db"),
        model="dsp-logmel",
        model_dir=tmp_path / "models",
    )


# -- PANNs with random weights ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def panns_model_dir(tmp_path_factory) -> Path:
    """A model folder holding a Cnn14 checkpoint of the real architecture with random (seeded) weights, saved
    in the published layout ``{"model": state_dict}``: speed and plumbing do not depend on the weights.

    Only the BatchNorm statistics are measured, on generated sounds: with the default statistics every input
    gives almost the same embedding (cosine > 0.999), which would make search tests meaningless."""
    import numpy as np
    import torch

    from audiosim.embedders.cnn14 import Cnn14
    from audiosim.synth import KINDS

    folder = tmp_path_factory.mktemp("panns_data")
    torch.manual_seed(0)
    model = Cnn14()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batch
            module.reset_running_stats()
    batch = np.stack([sound(kind, 2.0, seed=1000 + 7 * i + j) for i, kind in enumerate(KINDS) for j in range(4)])
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(batch))
    torch.save({"model": model.eval().state_dict()}, folder / "Cnn14_mAP=0.431.pth")
    return folder
