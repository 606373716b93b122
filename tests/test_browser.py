"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, against uvicorn.

Playwright's own browser download does not work offline, so the test needs /usr/bin/chromium
(`make browser` installs it). Without it the test skips, saying why - and fails under CI (CI=true).

Set OSTEOPANO_WEB_SCREENSHOT=docs/img/web-result.png to also save the result page screenshot there.
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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """uvicorn serving the small PyTorch run (heatmaps) on a free localhost port, in a thread."""
    require_chromium()
    import uvicorn

    from osteopano.web.app import create_app

    run, _, _ = build_small_model(tmp_path_factory.getbasetemp() / "web-model")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(run), log_level="warning"))
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
