"""End to end in real headless Chromium against a real `streamlit run app.py`: upload a WAV, transcribe it on
PyTorch and ONNX Runtime, see both transcripts and the latency chart, run an ONNX export from Build and see it
finish. Screenshots of every page go to artifacts/screenshots/ (or $WORKBENCH_SCREENSHOTS)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.paths import REPO_ROOT

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("WORKBENCH_SCREENSHOTS", REPO_ROOT / "artifacts" / "screenshots"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory, tiny_onnx):  # ort:fp32:cpu needs its built export
    port = free_port()
    log = open(tmp_path_factory.mktemp("streamlit") / "server.log", "w+")
    env = dict(os.environ, WORKBENCH_DEFAULT_MODEL="random:wav2vec2-tiny", WORKBENCH_ARTIFACTS=str(artifacts))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            pytest.fail(f"streamlit did not start:\n{log.read()[-3000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.seek(0)
    server_log = log.read()
    assert "Traceback" not in server_log, server_log[-3000:]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `bash run.sh test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1440, "height": 1700})
    pg.set_default_timeout(60_000)
    # the server's very first request is a deep link: it must still get navigation and the sidebar
    pg.goto(server + "/benchmark")
    pg.get_by_role("heading", name="Benchmark", exact=True).wait_for()
    pg.get_by_test_id("stSidebar").get_by_text("random weights").wait_for()
    nav = pg.get_by_test_id("stSidebarNav").inner_text().split()[1::2]  # icon ligature, title, ...
    assert nav == ["Overview", "Models", "Build", "Transcribe", "Benchmark", "Streaming", "Serving", "Profile"], nav
    pg.goto(server)
    pg.get_by_role("heading", name="ASR inference-backend workbench").wait_for()
    return pg


def goto(page, title: str, heading: str | None = None):
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=heading or title, exact=True).first.wait_for()
    page.wait_for_timeout(300)
    wait_idle(page)


def wait_idle(page):
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=90_000)


def shot(page, name: str):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_overview_and_sidebar(page):
    side = page.get_by_test_id("stSidebar")
    side.get_by_text("random weights").wait_for()
    assert "CPU" in side.inner_text()
    page.get_by_role("heading", name="Get started").wait_for()
    wait_idle(page)
    shot(page, "1-overview")


def test_transcribe_on_two_backends(page, hindi_wav):
    goto(page, "Transcribe")
    page.locator("input[type=file]").first.set_input_files(str(hindi_wav))
    page.get_by_text(hindi_wav.name).first.wait_for()
    chosen = page.get_by_test_id("stMultiSelect").first.inner_text()
    assert "torch:fp32:cpu" in chosen and "ort:fp32:cpu" in chosen
    page.get_by_role("button", name="Transcribe", exact=True).click()
    page.get_by_test_id("stPlotlyChart").first.wait_for(timeout=90_000)
    wait_idle(page)
    page.locator(".transcript").nth(1).wait_for(timeout=30_000)  # the rerun after the job may still be drawing
    main = page.get_by_test_id("stMain").inner_text()
    assert "Done: 2 transcripts" in main
    for spec in ("torch:fp32:cpu", "ort:fp32:cpu"):
        assert spec in main
    assert page.locator(".transcript").count() == 2
    assert page.locator(".js-plotly-plot").count() >= 1
    shot(page, "4-transcribe")


def test_build_onnx_export_finishes(page):
    goto(page, "Build")
    page.get_by_role("button", name="Export ONNX (FP32)", exact=True).click()
    page.get_by_text("Export ONNX (FP32) · random:wav2vec2-tiny — done").first.wait_for(timeout=90_000)
    page.get_by_text("Finished artifacts").wait_for()
    page.wait_for_timeout(1500)
    wait_idle(page)
    shot(page, "3-build")
    picker = page.get_by_test_id("stSelectbox").last   # newest first; other tests may have built newer ones
    picker.locator("input").click()
    page.keyboard.type("onnx-fp32-")
    page.get_by_role("option").filter(has_text="onnx-fp32-").first.wait_for(timeout=10_000)
    page.keyboard.press("Escape")
    assert page.get_by_test_id("stDataFrame").count() >= 1


def test_benchmark_runs_and_charts(page):
    goto(page, "Benchmark")
    for value in ("5", "4"):  # keep it small: 1 s audio, batch 1 (the tiny model, two backends)
        page.get_by_role("button", name=f"Remove {value}", exact=True).click()
    page.get_by_role("button", name="Run benchmark").click()   # a background job; the page follows it
    page.get_by_text("saved as run").wait_for(timeout=120_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)   # the run it saved, charted below
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 1
    shot(page, "5-benchmark")


def test_profile_operator_table(page):
    goto(page, "Profile")
    page.get_by_role("button", name="Profile one forward pass").click()
    page.get_by_text("Self time by operator").wait_for(timeout=60_000)
    wait_idle(page)
    shot(page, "7-profile")


@pytest.mark.parametrize("title,name", [("Models", "2-models"), ("Serving", "6-serving"), ("Overview", "1-overview")])
def test_other_pages_render(page, title, name):
    goto(page, title, "ASR inference-backend workbench" if title == "Overview" else title)
    assert not page.get_by_test_id("stException").count()
    shot(page, name)
