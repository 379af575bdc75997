"""End to end against a real Label Studio (PyPI ``label-studio`` in its own venv, .venv-labelstudio) and the
backend as a real server: project, local storage, annotations through the API, retrieved predictions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import unavailable

from audiosim.synth import sound, write

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
TOKEN = "audiosim-e2e-token"
KINDS = ["tone", "noise", "chirp", "clicks"]
CONFIG = (
    '<View><Audio name="audio" value="$audio"/><Choices name="label" toName="audio" choice="single">'
    + "".join(f'<Choice value="{k}"/>' for k in KINDS)
    + '</Choices><TextArea name="similar_clips" toName="audio" editable="false"/></View>'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    pytest.fail(f"{url} did not answer in {seconds} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


class LabelStudio:
    def __init__(self, url: str):
        self.url = url

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            raw = response.read()
        return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Label Studio and the backend, each a real server on loopback, sharing a local-files root."""
    if not LABEL_STUDIO.exists():
        unavailable("Label Studio is not installed in .venv-labelstudio (scripts/test installs it)")
    base = tmp_path_factory.mktemp("labelstudio")
    files = base / "files"
    for k, kind in enumerate(KINDS):
        for i in range(4):
            write(files / "audio" / f"{kind}-{i}.wav", sound(kind, 1.5 + 0.3 * i, seed=10 * k + i))
    home = base / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("USERNAME", "PASSWORD", "PORT", "HOST")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "share"),
        XDG_CONFIG_HOME=str(home / "config"),
        LABEL_STUDIO_USERNAME="admin@example.com",
        LABEL_STUDIO_PASSWORD="audiosim-e2e-pass",
        LABEL_STUDIO_USER_TOKEN=TOKEN,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(files),
        LABEL_STUDIO_BASE_DATA_DIR=str(base / "data"),
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    ls_port, backend_port = free_port(), free_port()
    ls_log = base / "label-studio.log"
    label_studio = subprocess.Popen(
        [
            str(LABEL_STUDIO),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(ls_port),
            "--data-dir",
            str(base / "data"),
        ],
        env=env,
        stdout=open(ls_log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    backend_log = base / "backend.log"
    backend_env = {
        **os.environ,
        "AUDIOSIM_CATALOG": str(base / "catalog.db"),
        "AUDIOSIM_MODEL": "aisfx",
        "LABEL_STUDIO_URL": f"http://127.0.0.1:{ls_port}",
        "LABEL_STUDIO_API_KEY": TOKEN,
        "LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "AUDIOSIM_CACHE_DIR": str(base / "cache"),
    }
    backend = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("audiosim")),
            "label-studio-backend",
            "--host",
            "127.0.0.1",
            "--port",
            str(backend_port),
        ],
        env=backend_env,
        stdout=open(backend_log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{backend_port}/health", 60, backend, backend_log)
        wait_http(f"http://127.0.0.1:{ls_port}/health", 240, label_studio, ls_log)
        yield LabelStudio(f"http://127.0.0.1:{ls_port}"), f"http://127.0.0.1:{backend_port}", files, backend_log
    finally:
        stop(backend)
        stop(label_studio)


def predictions_of(ls: LabelStudio, task_id: int) -> list[dict]:
    return ls.call("GET", f"/api/tasks/{task_id}")["predictions"]


def suggested(prediction: dict) -> str | None:
    for item in prediction["result"]:
        if item.get("type") == "choices":
            return item["value"]["choices"][0]
    return None


def retrieve(ls: LabelStudio, project: int) -> None:
    ls.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"selectedItems": {"all": True, "excluded": []}},
    )


def screenshot_labelling_page(ls: LabelStudio, project: int, task_id: int, expected: str) -> None:
    """What the annotator sees: the labelling page of an unlabelled task, with our suggestion pre-selected."""
    from playwright.sync_api import sync_playwright
    from test_browser import ARTIFACTS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{ls.url}/user/login/")
        page.fill("input[name=email]", "admin@example.com")
        page.fill("input[name=password]", "audiosim-e2e-pass")
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{ls.url}/projects/{project}/data?task={task_id}")
        page.wait_for_selector(f"text={expected}", timeout=60_000)
        page.wait_for_timeout(1500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "label-studio-suggestion.png"))
        browser.close()


@pytest.mark.slow
def test_label_studio_end_to_end(stack):
    ls, backend_url, files, backend_log = stack
    project = ls.call("POST", "/api/projects", {"title": "audiosim e2e", "label_config": CONFIG})["id"]
    storage = ls.call(
        "POST",
        "/api/storages/localfiles",
        {
            "project": project,
            "title": "sounds",
            "path": str(files / "audio"),
            "regex_filter": r".*\.wav$",
            "use_blob_urls": True,
        },
    )
    ls.call("POST", f"/api/storages/localfiles/{storage['id']}/sync")
    tasks = ls.call("GET", f"/api/projects/{project}/tasks?page_size=100")
    kind_of = {t["id"]: t["data"]["audio"].split("d=audio/")[1].split("-")[0] for t in tasks}
    assert len(tasks) == 16 and set(kind_of.values()) == set(KINDS)

    ls.call("POST", "/api/ml", {"project": project, "url": backend_url, "title": "audiosim"})
    annotations = {}
    for kind in KINDS:
        for task_id in [t for t, k in kind_of.items() if k == kind][:2]:
            annotation = ls.call(
                "POST",
                f"/api/tasks/{task_id}/annotations",
                {
                    "result": [
                        {"from_name": "label", "to_name": "audio", "type": "choices", "value": {"choices": [kind]}}
                    ],
                },
            )
            annotations[task_id] = annotation["id"]
    unlabelled = [t for t in kind_of if t not in annotations]

    retrieve(ls, project)
    for task_id in unlabelled:
        predictions = predictions_of(ls, task_id)
        assert len(predictions) == 1, (task_id, predictions, backend_log.read_text()[-2000:])
        assert suggested(predictions[0]) == kind_of[task_id], (task_id, kind_of[task_id], predictions[0])
        assert 0 < predictions[0]["score"] <= 1

    retrieve(ls, project)  # again, with nothing changed: no duplicates
    assert all(len(predictions_of(ls, t)) == 1 for t in unlabelled)
    screenshot_labelling_page(ls, project, unlabelled[0], kind_of[unlabelled[0]])

    # Delete the annotations that taught "chirp": the suggestion for chirp tasks changes.
    chirp_tasks = [t for t in unlabelled if kind_of[t] == "chirp"]
    for task_id, annotation_id in annotations.items():
        if kind_of[task_id] == "chirp":
            ls.call("DELETE", f"/api/annotations/{annotation_id}")
    retrieve(ls, project)
    latest = [max(predictions_of(ls, t), key=lambda p: p["id"]) for t in chirp_tasks]
    assert all(suggested(p) != "chirp" for p in latest), latest

    # START_TRAINING (Label Studio's "Start training") re-syncs every annotation from Label Studio's API.
    request = urllib.request.Request(
        backend_url + "/webhook",
        data=json.dumps({"action": "START_TRAINING", "project": {"id": project}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        assert json.load(response)["annotations"] == len(annotations) - 2  # the two chirp ones are gone
