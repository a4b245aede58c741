"""The app in a real browser: `streamlit run` as a subprocess, driven by headless Chromium through Playwright.

A real ICBHI recording is uploaded through the page's file input; the test waits for the recording-level summary that
an independent `Predictor` gives for the same file and for the plots, then saves a full-page screenshot to
`test-artifacts/app_screenshot.png`. Skipped with the reason when Chromium (/usr/bin/chromium, Debian's `chromium`
package) or the `playwright` Python package is missing. Every wait is bounded and the server is always stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "streamlit_app.py"
RECORDING = REPO.parent / "shared" / "data" / "icbhi" / "audio_and_txt_files" / "107_2b3_Pr_mc_AKGC417L.wav"
SCREENSHOT = REPO / "test-artifacts" / "app_screenshot.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_S, ANALYSIS_S = 90, 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + SERVER_START_S
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tiny_model_dir, tmp_path):
    """`streamlit run` on a free local port with the tiny model; stopped (the whole process group) afterwards."""
    port = _free_port()
    log = tmp_path / "streamlit.log"
    env = {**os.environ, "LUNGSOUND_APP_MODEL": str(tiny_model_dir), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    # Streamlit reads ./.streamlit/config.toml: the repository's, as `make app` (run from the repository) would.
    (tmp_path / ".streamlit").mkdir()
    shutil.copy(REPO / ".streamlit" / "config.toml", tmp_path / ".streamlit" / "config.toml")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@pytest.fixture
def tiny_model_dir(tmp_path) -> Path:
    from tests.app_support import write_tiny_model

    return write_tiny_model(tmp_path / "tiny")


@pytest.fixture
def browser_page():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium package: apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                     timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(ANALYSIS_S * 1000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def recording() -> Path:
    if not RECORDING.is_file():
        pytest.skip(f"real data not available: {RECORDING} is absent (CI has it at ../shared/data)")
    return RECORDING


def test_upload_in_a_real_browser_shows_the_analysis(recording, browser_page, server, tiny_model_dir):
    from lungsound.inference import Predictor

    expected = Predictor.from_checkpoint(tiny_model_dir).predict(recording.read_bytes(), name=recording.name)
    page = browser_page
    page.goto(server, wait_until="domcontentloaded")
    page.get_by_text("Research use only - not a medical device").wait_for()
    page.locator("[data-testid='stMain'] [data-testid='stFileUploader'] input[type='file']").set_input_files(
        str(recording))
    page.get_by_role("heading", name=expected.summary["text"]).wait_for()
    images = page.locator("[data-testid='stMain'] [data-testid='stImage'] img")
    deadline = time.time() + ANALYSIS_S
    while images.count() < 3 and time.time() < deadline:
        page.wait_for_timeout(500)
    assert images.count() == 3  # timeline, waveform, spectrogram with the explanation
    assert page.locator("[data-testid='stException']").count() == 0
    page.get_by_text("Model card").click()
    page.get_by_text("Intended use").wait_for()
    # Streamlit scrolls inside its main container, so a full-page shot needs a viewport as tall as the content.
    height = 0
    for _ in range(5):
        content = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
        if content <= height:
            break
        height = min(int(content) + 40, 12000)
        page.set_viewport_size({"width": 1400, "height": height})
        page.wait_for_timeout(700)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
