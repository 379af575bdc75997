"""Bounded load on loopback: 50 concurrent clients doing find-similar and streaming against a real `datasette serve`
for 30 s, and 10 concurrent /predict batches against the backend's real HTTP server. Zero errors; the latencies
go to tests/artifacts/load-*.json (and the README's Reliability section)."""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse

import numpy as np
import pytest
from test_browser import ARTIFACTS, free_port, served  # noqa: F401  (served is a fixture)
from test_labelstudio import CONFIG, PROJECT, backend_config, tasks  # noqa: F401  (tasks is a fixture)

LOAD_SECONDS = 30
CLIENTS = 50


def summary(samples: dict[str, list[float]], errors: list[str], seconds: float) -> dict:
    out = {"seconds": round(seconds, 1), "errors": len(errors), "first_errors": errors[:5]}
    for kind, times in samples.items():
        out[kind] = {
            "requests": len(times),
            "per_s": round(len(times) / seconds, 1),
            "p50_ms": round(statistics.median(times) * 1000, 1) if times else None,
            "p99_ms": round(float(np.percentile(times, 99)) * 1000, 1) if times else None,
        }
    return out


def save(name: str, result: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


@pytest.mark.slow
def test_datasette_serves_50_concurrent_clients_without_an_error(served):  # noqa: F811
    base, _ = served
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    listing = http.client.HTTPConnection(host, int(port), timeout=30)
    listing.request("GET", "/audiosim/clips.json?_shape=array&_col=id&_size=max")
    ids = [row["id"] for row in json.loads(listing.getresponse().read())]
    assert len(ids) >= 10
    samples: dict[str, list[float]] = {"similar": [], "stream": []}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_SECONDS

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        while time.monotonic() < deadline:
            clip = rng.choice(ids)
            if rng.random() < 0.5:
                kind, path, headers, ok = "similar", f"/-/audiosim.json?clip={clip}&k=10", {}, (200,)
            else:
                start = rng.randrange(0, 20000)
                kind, path, headers, ok = "stream", f"/-/audiosim/audio/{clip}", {"Range": f"bytes={start}-"}, (206,)
            t = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                failure = None if response.status in ok and body else f"{path}: HTTP {response.status}"
                if kind == "similar" and not failure and not json.loads(body).get("results"):
                    failure = f"{path}: no results"
            except (OSError, http.client.HTTPException) as e:
                failure = f"{path}: {type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
            elapsed = time.perf_counter() - t
            with lock:
                (errors.append(failure) if failure else samples[kind].append(elapsed))
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = summary(samples, errors, time.monotonic() - started)
    result["clients"] = CLIENTS
    save("load-datasette.json", result)
    assert not errors, errors[:5]
    assert samples["similar"] and samples["stream"]


@pytest.mark.slow
def test_backend_answers_10_concurrent_predict_batches_without_an_error(tmp_path, tasks):  # noqa: F811
    from werkzeug.serving import make_server

    from labelstudio_backend.app import create_app

    root, task_list = tasks
    app = create_app(backend_config(tmp_path, root, model="dsp-logmel"))
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    samples: dict[str, list[float]] = {"predict": []}
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(5):
            batch = rng.sample(task_list, 8)
            body = json.dumps(
                {
                    "tasks": [{k: v for k, v in t.items() if k != "kind"} for t in batch],
                    "project": PROJECT,
                    "label_config": CONFIG,
                }
            )
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                results = json.loads(response.read()).get("results") if response.status == 200 else None
                failure = None if results and len(results) == len(batch) else f"HTTP {response.status}: {results}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                failure = f"{type(e).__name__}: {e}"
            with lock:
                (errors.append(failure) if failure else samples["predict"].append(time.perf_counter() - t))
        conn.close()

    started = time.monotonic()
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.shutdown()
        app.config["AUDIOSIM_LABELER"].close()
    result = summary(samples, errors, time.monotonic() - started)
    result.update(clients=10, tasks_per_batch=8)
    save("load-backend.json", result)
    assert not errors, errors[:5]
    assert len(samples["predict"]) == 50


@pytest.mark.slow
def test_slow_and_oversized_uploads_are_cut_off_and_hold_nobody_up(served):  # noqa: F811
    import socket

    from datasette_audiosim.uploads import IDLE_S

    base, _ = served
    host, port = urllib.parse.urlsplit(base).netloc.split(":")

    def raw_post(length: int, body: bytes) -> socket.socket:
        s = socket.create_connection((host, int(port)), timeout=IDLE_S + 30)
        head = f"POST /-/audiosim.json HTTP/1.1\r\nHost: {host}\r\nContent-Type: audio/wav\r\n"
        s.sendall(f"{head}Content-Length: {length}\r\n\r\n".encode() + body)
        return s

    def status_of(s: socket.socket) -> tuple[int, bytes]:
        response = http.client.HTTPResponse(s)  # the whole reply, however the server splits it into packets
        response.begin()
        return response.status, response.read()

    huge = raw_post(10 * 2**30, b"")  # claims 10 GB: refused before any of it is read
    code, reply = status_of(huge)
    assert code == 413 and b"larger than the 20 MB limit" in reply
    huge.close()

    slow = raw_post(1_000_000, b"RIFF" + b"\0" * 96)  # then nothing more
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for clip in (1, 2, 3):  # others are served while the slow upload hangs
        conn.request("GET", f"/-/audiosim.json?clip={clip}&k=3")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["results"]
    code, reply = status_of(slow)
    assert code == 408 and b"upload stalled" in reply
    assert time.monotonic() - started >= IDLE_S - 1  # it was cut off by the idle limit, not by anything else
    slow.close()
