"""End to end in real headless Chromium (Debian's, through Playwright): table -> Find similar -> results that
play; then an upload. The results page is saved as a screenshot in the test's artifacts folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import unavailable
from datasette import __version__ as datasette_version

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, corpus):
    """`audiosim index` then `datasette audiosim.db`, exactly as a user would, on a loopback port."""
    folder = tmp_path / "sounds"
    shutil.copytree(corpus, folder)
    catalog = tmp_path / "audiosim.db"
    # Milvus Lite allows one process per store, so index in a process of its own, as the CLI would.
    audiosim = Path(sys.executable).with_name("audiosim")
    subprocess.run(
        [str(audiosim), "index", str(folder), "--catalog", str(catalog), "--model", "dsp-logmel"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    datasette = Path(sys.executable).with_name("datasette")
    # Its log goes to a file: a pipe nobody reads fills up under load and stalls the server.
    log = open(tmp_path / "datasette.log", "wb")  # noqa: SIM115 - closed with the process below
    process = subprocess.Popen(
        [str(datasette), "serve", str(catalog), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            pytest.fail(f"datasette did not start: {(tmp_path / 'datasette.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", folder
    process.kill()
    process.wait()
    log.close()


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        unavailable("Debian chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


def audio_duration(page, selector: str) -> float:
    """Load the element's audio and return its duration as the browser decoded it."""
    return page.eval_on_selector(
        selector,
        """el => new Promise((resolve, reject) => {
            if (el.readyState >= 1 && el.duration > 0) return resolve(el.duration);
            el.addEventListener('loadedmetadata', () => resolve(el.duration), {once: true});
            el.addEventListener('error', () => reject(new Error('audio error ' + (el.error && el.error.code))),
                                {once: true});
            el.preload = 'metadata'; el.load();
        })""",
    )


def test_table_to_similar_results_that_play_then_upload(served, browser):
    base, folder = served
    page = browser.new_page()
    page.goto(f"{base}/audiosim/clips?_sort=id")
    row_players = page.locator("audio")
    assert row_players.count() >= 20
    page.click("a.audiosim-similar >> nth=0")  # clip 1's "Find similar"
    page.wait_for_selector("ol.audiosim-results li")
    results = page.locator("ol.audiosim-results li")
    assert results.count() == 10
    scores = [float(s) for s in page.locator("ol.audiosim-results .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert audio_duration(page, "ol.audiosim-results li:first-child audio") > 0
    page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_load_state("networkidle")
    widths = page.eval_on_selector_all("img.audiosim-spectrogram", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths == [240] * 10  # every thumbnail decoded
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"find-similar-datasette-{datasette_version}.png"), full_page=True)

    page.click("ol.audiosim-results li:first-child >> text=More like this")  # hop onward
    page.wait_for_selector("ol.audiosim-results li")
    assert "Like clip" in page.inner_text("h2")

    page.goto(f"{base}/-/audiosim")
    page.set_input_files("#audiosim-file", str(folder / "chord" / "chord-2.wav"))
    page.click("#audiosim-upload input[type=submit]")
    page.wait_for_selector("ol.audiosim-results li")
    assert "the uploaded" in page.inner_text("h2")
    assert page.inner_text("ol.audiosim-results li:first-child strong") == "chord-2.wav"
    page.screenshot(path=str(ARTIFACTS / f"find-similar-upload-datasette-{datasette_version}.png"), full_page=True)
