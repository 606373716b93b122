"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against uvicorn.

Playwright's own browser download does not work offline, so the test needs /usr/bin/chromium
(`make browser` installs it). Without it the test skips, saying why - and fails under CI (CI=true).

Set OSTEOPANO_WEB_SCREENSHOT=docs/img/web-result.png (and OSTEOPANO_WEB_MEASURE_SCREENSHOT=docs/img/web-measure.png)
to also save the result page screenshots there.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_model import build_small_model

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} not found: install Debian's chromium (make browser, or apt-get install chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


REAL_NATIVE = Path(__file__).resolve().parents[1].parent / "shared" / "real-samples" / "native"


def _serve(app) -> Iterator[str]:
    """uvicorn serving ``app`` on a free localhost port, in a thread, while the generator is open."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: no handlers bound to this test's captured stderr outlive the test
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The small PyTorch run (heatmaps)."""
    require_chromium()
    from osteopano.web.app import create_app

    run, _, _ = build_small_model(tmp_path_factory.getbasetemp() / "web-model")
    yield from _serve(create_app(run))


@pytest.fixture(scope="module")
def measure_server() -> Iterator[str]:
    """No model: measurement mode, as `osteopano serve` without MODEL."""
    require_chromium()
    from osteopano.web.app import create_app

    yield from _serve(create_app(None))


def test_upload_result_heatmap_and_report_in_chromium(server, tmp_path_factory, tmp_path):
    from playwright.sync_api import sync_playwright

    phantom = min((tmp_path_factory.getbasetemp() / "web-model" / "phantoms").glob("*.png"))
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(server + "/")
            assert page.get_by_label("Choose a radiograph file").count() == 1  # the input has its label
            page.set_input_files("#file", str(phantom))
            assert phantom.name in page.inner_text("#file-chosen")  # the page's script ran
            page.click("#submit")
            page.wait_for_selector("#probability", timeout=60_000)

            assert re.fullmatch(r"[01]\.\d{3}", page.inner_text("#probability").strip())
            assert page.is_visible("#heatmap") and page.is_visible("#radiograph")
            assert page.is_visible("#cortex-overlay") and page.is_visible("#mcw-right")  # the measurement too
            assert page.eval_on_selector("#heatmap", "img => img.complete && img.naturalWidth") > 0
            assert "only a DXA scan can diagnose osteoporosis" in page.inner_text("footer")
            page.screenshot(path=str(tmp_path / "web-result.png"), full_page=True)
            if os.environ.get("OSTEOPANO_WEB_SCREENSHOT"):
                page.screenshot(path=os.environ["OSTEOPANO_WEB_SCREENSHOT"], full_page=True)

            with page.expect_download() as info:
                page.click("#report-pdf")
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
            assert saved.name == "osteopano-report.pdf" and saved.read_bytes().startswith(b"%PDF")

            page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        finally:
            browser.close()
    assert (tmp_path / "web-result.png").stat().st_size > 10_000
    assert not problems, f"browser errors (CSP violations, script errors): {problems}"
    assert all(url.startswith((server, "data:")) for url in requests), requests


def test_measurement_mode_with_a_real_radiograph_in_chromium(measure_server, tmp_path):
    from playwright.sync_api import sync_playwright

    samples = sorted(REAL_NATIVE.glob("*.png")) if REAL_NATIVE.is_dir() else []
    if not samples:
        pytest.skip(f"no real radiographs at {REAL_NATIVE} (../shared/real-samples/native beside the checkout)")
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto(measure_server + "/")
            page.set_input_files("#file", str(samples[0]))
            page.get_by_label("Pixel spacing (mm per pixel, optional)").fill("0.1")  # native: about 0.1 mm/px
            page.click("#submit")
            page.wait_for_selector("#mcw", timeout=120_000)

            assert page.is_visible("#cortex-overlay")
            assert page.eval_on_selector("#cortex-overlay", "img => img.complete && img.naturalWidth") > 0
            assert page.query_selector("#probability") is None  # no model, no score
            for side in ("right", "left"):
                width = page.inner_text(f"#mcw-{side} td.width")
                assert re.match(r"\d+\.\d\d mm|not found", width), (side, width)
            assert re.search(r"\d+\.\d\d mm", page.inner_text("#mcw-mean"))
            decision = page.inner_text("#mcw-h")
            assert decision in ("Refer for DXA bone-density assessment", "No referral suggested by this screen",
                                "No decision from the cortical width"), decision
            assert re.search(r"cortical width|measured", page.inner_text("#mcw-decision"))
            assert "For the dentist" in page.inner_text("main") and "For the patient" in page.inner_text("main")
            assert "only a DXA scan can diagnose osteoporosis" in page.inner_text("footer")
            page.screenshot(path=str(tmp_path / "web-measure.png"), full_page=True)
            if os.environ.get("OSTEOPANO_WEB_MEASURE_SCREENSHOT"):
                page.screenshot(path=os.environ["OSTEOPANO_WEB_MEASURE_SCREENSHOT"], full_page=True)

            with page.expect_download() as info:
                page.click("#report-pdf")
            saved = tmp_path / info.value.suggested_filename
            info.value.save_as(saved)
            assert saved.name == "osteopano-report.pdf" and saved.read_bytes().startswith(b"%PDF")
        finally:
            browser.close()
    assert not problems, f"browser errors (CSP violations, script errors): {problems}"
    assert all(url.startswith((measure_server, "data:")) for url in requests), requests
