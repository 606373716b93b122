"""The web app (osteopano.web.app): API, page, limits, privacy, report download.

Limit and concurrency tests use a fake model injected with ``create_app(model=...)``; the end-to-end
tests use a tiny model trained on synthetic phantoms (once per session)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from web_model import build_small_model

from osteopano.io.images import read_image, write_dicom
from osteopano.screen.result import ScreeningResult
from osteopano.screen.screener import load
from osteopano.web import app as web

PATIENT_ID = "PID-4471-SECRET"
PATIENT_NAME = "Doe^Janet"


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    return build_small_model(tmp_path_factory.getbasetemp() / "web-model")


def png_bytes(width: int = 96, height: int = 48, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class FakeModel:
    """Stands in for an engine: a fixed probability, an optional heatmap, optionally blocking."""

    supports_heatmaps = True

    def __init__(self, probability: float = 0.7, synthetic: bool | None = True, gate: threading.Event | None = None):
        self.probability, self.gate = probability, gate
        self.threshold, self.model_id = 0.5, "fake-00000000"
        self.card = {"model_id": self.model_id, "backbone": "fake", "classes": ["normal", "osteoporosis"],
                     "threshold": {"value": 0.5, "rule": "0.5"},
                     "training_data": {"synthetic": synthetic, "description": "test data", "n_images": 3}}
        self.started = threading.Event()
        self.calls = 0

    measures = False

    def predict(self, image, heatmap: bool = False, pixel_spacing_mm=None, covariates=None) -> ScreeningResult:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        h, w = image.pixels.shape
        heat = np.tile(np.linspace(0, 1, w, dtype=np.float32), (h, 1)) if heatmap else None
        return ScreeningResult(image.path, image.patient_id, self.probability, self.probability >= 0.5, 0.5,
                               self.model_id, heatmap=heat, pixel_spacing_mm=image.pixel_spacing_mm)


def client_for(model=None, **kwargs) -> TestClient:
    return TestClient(web.create_app(model=model or FakeModel(), **kwargs))


def multipart(data: bytes, filename: str = "scan.png") -> tuple[bytes, str]:
    boundary = "testboundary7731"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# ----------------------------------------------------------------------------- content sniffing, store


@pytest.mark.parametrize("head, kind", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "png"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"), (b"BM\x00\x00", "bmp"), (b"\0" * 128 + b"DICM", "dicom"),
    (b"hello, this is text", None), (b"%PDF-1.4", None), (b"", None),
])
def test_sniff_image_type(head, kind):
    assert web.sniff_image_type(head) == kind


def test_report_store_hands_each_file_out_once_and_expires():
    store = web.ReportStore(ttl_s=60, max_items=2)
    token = store.put({"html": b"<html>", "pdf": b"%PDF"})
    assert store.take(token, "pdf") == b"%PDF"
    assert store.take(token, "pdf") is None
    assert store.take(token, "html") == b"<html>"
    assert len(store) == 0
    first = store.put({"html": b"1"})
    store.put({"html": b"2"})
    store.put({"html": b"3"})
    assert store.take(first, "html") is None  # the oldest was dropped past max_items
    expired = web.ReportStore(ttl_s=0.0)
    assert expired.take(expired.put({"html": b"x"}), "html") is None


# ----------------------------------------------------------------------------- API with the real model


@pytest.mark.slow
def test_api_png_with_torch_model_and_heatmap(small_model):
    run, _, data = small_model
    path = min(data.glob("*.png"))
    client = TestClient(web.create_app(run))
    response = client.post("/api/v1/screen?heatmap=true", files={"file": ("opg.png", path.read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = load(run, engine="torch").predict(read_image(path))
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert body["decision"] == (body["probability"] >= body["threshold"])
    assert body["model_id"] == expected.model_id
    assert body["filename"] == "opg.png"
    assert "only a DXA scan can diagnose osteoporosis" in body["disclaimer"]
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))))
    assert heat.shape == read_image(path).pixels.shape and heat.dtype == np.uint8


@pytest.mark.slow
def test_api_dicom_keeps_patient_data_out_of_logs(small_model, tmp_path, caplog):
    _, onnx_file, data = small_model
    pixels = np.asarray(Image.open(sorted(data.glob("*.png"))[1]), dtype=np.uint16)
    dcm = tmp_path / "Janet_Doe_1950.dcm"
    write_dicom(dcm, pixels, 0.1, patient_id=PATIENT_ID, PatientName=PATIENT_NAME)
    caplog.set_level(logging.DEBUG)
    client = TestClient(web.create_app(onnx_file))
    response = client.post("/api/v1/screen?heatmap=true", files={"file": (dcm.name, dcm.read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = load(onnx_file).predict(read_image(dcm))
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert body["heatmap_png_base64"] is None and "heatmap" in body["heatmap_note"]  # ONNX: no Grad-CAM
    assert PATIENT_ID not in response.text
    assert any(r.name == "osteopano.web.app" for r in caplog.records), "the app logged nothing to check"
    for secret in (PATIENT_ID, "Doe", "Janet", dcm.name, "1950"):
        assert secret not in caplog.text


@pytest.mark.slow
def test_onnx_path_never_imports_torch(small_model):
    _, onnx_file, data = small_model
    image = min(data.glob("*.png"))
    script = f"""
import json, sys
from fastapi.testclient import TestClient
from osteopano.web.app import create_app
client = TestClient(create_app({str(onnx_file)!r}))
image = open({str(image)!r}, "rb").read()
r = client.post("/api/v1/screen", files={{"file": ("a.png", image)}})
page = client.post("/screen", files={{"file": ("a.png", image)}})
print(json.dumps({{"status": r.status_code, "page": page.status_code, "probability": r.json().get("probability"),
                  "torch": "torch" in sys.modules}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200 and result["page"] == 200
    assert 0.0 <= result["probability"] <= 1.0
    assert result["torch"] is False


# ----------------------------------------------------------------------------- limits


def test_upload_over_the_limit_is_413_with_and_without_content_length():
    model = FakeModel()
    client = client_for(model, max_upload_mb=1)
    big = b"\x89PNG\r\n\x1a\n" + bytes(2 * 2**20)
    response = client.post("/api/v1/screen", files={"file": ("big.png", big)})
    assert response.status_code == 413
    assert "limit of 1 MB" in response.json()["detail"]
    body, ctype = multipart(big)
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # streamed: no Content-Length
    response = client.post("/api/v1/screen", content=chunks, headers={"Content-Type": ctype})
    assert response.status_code == 413
    small = png_bytes()
    assert client.post("/api/v1/screen", files={"file": ("ok.png", small)}).status_code == 200
    assert model.calls == 1


def test_text_file_is_415_whatever_its_name():
    model = FakeModel()
    client = client_for(model)
    response = client.post("/api/v1/screen", files={"file": ("scan.png", b"Patient notes: nothing to see\n" * 20)})
    assert response.status_code == 415
    assert "not a PNG, JPEG, TIFF, BMP or DICOM" in response.json()["detail"]
    assert model.calls == 0


def test_corrupt_png_is_422_with_the_reason():
    client = client_for()
    data = png_bytes()
    response = client.post("/api/v1/screen", files={"file": ("broken.png", data[: len(data) // 2])})
    assert response.status_code == 422
    assert "truncated" in response.json()["detail"]


def test_missing_file_field_is_400():
    client = client_for()
    response = client.post("/api/v1/screen", files={"image": ("a.png", png_bytes())})
    assert response.status_code == 400
    assert "'file'" in response.json()["detail"]


def test_full_queue_is_503_with_retry_after():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    client = client_for(model, workers=1, queue_size=0)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(
        r=client.post("/api/v1/screen", files={"file": ("a.png", png_bytes())})))
    worker.start()
    try:
        assert model.started.wait(10)
        busy = client.post("/api/v1/screen", files={"file": ("b.png", png_bytes())})
        assert busy.status_code == 503
        assert int(busy.headers["Retry-After"]) > 0
        assert client.get("/healthz").json()["in_flight"] == 1
    finally:
        gate.set()
        worker.join(10)
    assert first["r"].status_code == 200
    assert client.post("/api/v1/screen", files={"file": ("c.png", png_bytes())}).status_code == 200


def test_slow_screening_is_504_and_keeps_its_slot_until_done():
    gate = threading.Event()
    client = client_for(FakeModel(gate=gate), workers=1, queue_size=0, timeout_s=0.3)
    try:
        response = client.post("/api/v1/screen", files={"file": ("a.png", png_bytes())})
        assert response.status_code == 504
        assert client.post("/api/v1/screen", files={"file": ("b.png", png_bytes())}).status_code == 503
    finally:
        gate.set()
    deadline = time.monotonic() + 5
    while client.get("/healthz").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("/healthz").json()["in_flight"] == 0


# ----------------------------------------------------------------------------- privacy of uploads


def test_uploads_never_touch_disk_by_default(monkeypatch, tmp_path):
    import starlette.formparsers

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", refuse)
    data = png_bytes(1200, 1000)  # noise: ~1.2 MB, above Starlette's 1 MB spooling threshold
    assert len(data) > 2**20
    client = client_for()
    assert client.post("/api/v1/screen", files={"file": ("a.png", data)}).status_code == 200


def test_keep_uploads_saves_the_upload_under_a_random_name(tmp_path):
    keep = tmp_path / "kept"
    client = client_for(keep_uploads=keep)
    data = png_bytes()
    assert client.post("/api/v1/screen", files={"file": ("Janet_Doe.png", data)}).status_code == 200
    images = list(keep.glob("*.png"))
    assert len(images) == 1 and images[0].read_bytes() == data
    assert "Doe" not in images[0].name
    assert stat.S_IMODE(images[0].stat().st_mode) == 0o600  # the upload may hold a patient's name
    assert stat.S_IMODE(images[0].with_suffix(".json").stat().st_mode) == 0o600
    summary = json.loads(images[0].with_suffix(".json").read_text())
    assert summary["probability"] == pytest.approx(0.7) and summary["decision"] is True


# ----------------------------------------------------------------------------- other routes


def test_model_card_and_healthz():
    client = client_for()
    card = client.get("/api/v1/model").json()
    assert card["model_id"] == "fake-00000000" and card["training_data"]["synthetic"] is True
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "mode": "model", "model_id": "fake-00000000", "measures": False,
                      "in_flight": 0, "capacity": 10}


def test_openapi_and_docs_are_served_without_cdn():
    client = client_for()
    spec = client.get("/openapi.json").json()
    screen = spec["paths"]["/api/v1/screen"]["post"]
    assert "file" in screen["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"413", "415", "422", "503", "504"} <= set(screen["responses"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/v1/screen" in docs.text
    assert not re.search(r'(src|href)="(https?:)?//', docs.text)


@pytest.mark.parametrize("synthetic", [True, False])
def test_page_renders_accessibly_with_disclaimer(synthetic):
    response = client_for(FakeModel(synthetic=synthetic)).get("/")
    html = response.text
    assert response.status_code == 200
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert '<label for="file"' in html and re.search(r'<input id="file" name="file" type="file"', html)
    assert "not a diagnosis" in html and "only a DXA scan can diagnose osteoporosis" in html
    assert ("trained on synthetic phantom images" in html) is synthetic
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must load nothing from the internet"
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert client_for().get("/static/web.css").status_code == 200


def test_page_error_is_shown_on_the_upload_page():
    response = client_for().post("/screen", files={"file": ("notes.txt", b"just text " * 30)})
    assert response.status_code == 415
    assert 'role="alert"' in response.text and "not a PNG, JPEG, TIFF, BMP or DICOM" in response.text


@pytest.mark.slow
def test_result_page_and_single_report_download(small_model):
    run, _, data = small_model
    client = TestClient(web.create_app(run))
    image = sorted(data.glob("*.png"))[2]
    response = client.post("/screen", files={"file": ("opg.png", image.read_bytes())})
    assert response.status_code == 200, response.text
    html = response.text
    expected = load(run, engine="torch").predict(read_image(image))
    assert f">{expected.probability:.3f}<" in html
    assert ("Refer for DXA" in html) is bool(expected.decision)
    assert 'id="heatmap"' in html and 'id="radiograph"' in html
    assert "For the dentist" in html and "For the patient" in html
    assert "only a DXA scan can diagnose osteoporosis" in html
    links = re.findall(r'href="(/report/[^"]+/(html|pdf))"', html)
    assert {fmt for _, fmt in links} == {"html", "pdf"}
    for url, fmt in links:
        report = client.get(url)
        assert report.status_code == 200
        assert report.content.startswith(b"%PDF" if fmt == "pdf" else b"<!doctype html")
        assert "attachment" in report.headers["content-disposition"]
        assert report.headers["cache-control"] == "no-store"
        assert client.get(url).status_code == 404  # served once



# ----------------------------------------------------------------------------- measurement mode (no model)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory) -> tuple[Path, Path]:
    """One synthetic phantom as DICOM (pixel spacing in the file) and one as PNG (no spacing), 800 px wide."""
    from osteopano.phantom.generate import generate

    base = tmp_path_factory.mktemp("measure-phantoms")
    generate(base / "dcm", 1, 5, fmt="dicom", width=800, progress=False, workers=1)
    generate(base / "png", 1, 6, fmt="png", width=800, progress=False, workers=1)
    return next((base / "dcm").glob("*.dcm")), next((base / "png").glob("*.png"))


@pytest.fixture(scope="module")
def measure_client() -> TestClient:
    return TestClient(web.create_app(None))


def test_measure_api_without_model_matches_the_cortex_measurement(measure_client, phantom_files):
    from osteopano.cortex.measure import measure

    dcm, _ = phantom_files
    response = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", dcm.read_bytes())})
    assert response.status_code == 200, response.text
    body = response.json()
    image = read_image(dcm)
    expected = measure(image, pixel_spacing_mm=image.pixel_spacing_mm)
    assert body["spacing_source"] == "file" and body["pixel_spacing_mm"] == pytest.approx(image.pixel_spacing_mm)
    assert body["quality"] == expected.quality != "failed"  # the phantom's cortex is found
    assert body["mcw_mm"] == pytest.approx(expected.mcw_mm, abs=0.01)
    for side in body["sides"]:
        direct = getattr(expected, side["side"])
        if direct.located:
            assert side["mcw_mm"] == pytest.approx(direct.mcw_mm, abs=0.01) and side["width_text"].endswith("mm")
        else:  # a side the measurement could not use: no width, said so
            assert side["mcw_mm"] is None and side["width_text"] == "not found"
    assert body["decision"] is expected.decision is (expected.mcw_mm < 3.0)
    assert body["decision_text"].startswith("Refer for DXA" if expected.decision else "No referral")
    for side in ("right", "left"):  # the polylines: (x, y) points inside the image
        border = np.asarray(body["measurement"][f"side_{side}"]["border"])
        assert border.ndim == 2 and border.shape[1] == 2 and len(border) > 10
        assert (border[:, 0] >= 0).all() and (border[:, 0] < image.pixels.shape[1]).all()
    assert body["model"] is None and "not a diagnosis" in body["disclaimer"]
    assert "cortical width" in body["texts"]["dentist"] and body["texts"]["patient"]


def test_measure_api_spacing_field_gives_millimetres(measure_client, phantom_files):
    _, png = phantom_files
    data = png.read_bytes()
    unknown = measure_client.post("/api/v1/measure", files={"file": ("opg.png", data)}).json()
    assert unknown["spacing_source"] == "unknown" and unknown["mcw_mm"] is None and unknown["decision"] is None
    assert unknown["mcw_px"] > 0 and all(s["width_text"].endswith("(pixel spacing unknown)")
                                         for s in unknown["sides"] if s["located"])
    assert "pixel spacing is unknown" in unknown["decision_text"]
    given = measure_client.post("/api/v1/measure", files={"file": ("opg.png", data)},
                                data={"pixel_spacing_mm": "0.25"}).json()
    assert given["spacing_source"] == "option" and given["pixel_spacing_mm"] == 0.25
    assert given["mcw_mm"] == pytest.approx(given["mcw_px"] * 0.25, rel=0.01)
    assert given["decision"] is (given["mcw_mm"] < 3.0)
    for bad in ("abc", "5", "-0.1"):
        response = measure_client.post("/api/v1/measure", files={"file": ("opg.png", data)},
                                       data={"pixel_spacing_mm": bad})
        assert response.status_code == 400 and "pixel spacing" in response.json()["detail"], bad


def test_measurement_mode_routes(measure_client):
    response = measure_client.post("/api/v1/screen", files={"file": ("a.png", png_bytes())})
    assert response.status_code == 409 and "/api/v1/measure" in response.json()["detail"]
    assert measure_client.get("/api/v1/model").status_code == 404
    health = measure_client.get("/healthz").json()
    assert health["mode"] == "measure" and health["model_id"] is None and health["measures"] is True
    page = measure_client.get("/").text
    assert 'name="pixel_spacing_mm"' in page and "No trained model is used" in page
    assert "trained on synthetic phantom" not in page and "does not say what data" not in page
    assert "/api/v1/measure" in measure_client.get("/docs").text


def test_measurement_page_overlay_widths_decision_and_report(measure_client, phantom_files):
    dcm, _ = phantom_files
    response = measure_client.post("/screen", files={"file": ("opg.dcm", dcm.read_bytes())})
    assert response.status_code == 200, response.text
    html = response.text
    body = measure_client.post("/api/v1/measure", files={"file": ("opg.dcm", dcm.read_bytes())}).json()
    assert 'id="cortex-overlay"' in html and 'id="probability"' not in html
    for side in body["sides"]:
        assert side["width_text"] in html
    assert body["decision_text"].split(": ", 1)[1].lower() in html.replace("&#39;", "'").lower()
    assert "For the dentist" in html and "For the patient" in html and "only a DXA scan" in html
    links = {fmt: url for url, fmt in re.findall(r'href="(/report/[^"]+/(html|pdf))"', html)}
    report = measure_client.get(links["html"]).text
    assert "Cortical width measurement" in report and "Not screened" not in report
    assert body["sides"][0]["width_text"] in report
    assert measure_client.get(links["pdf"]).content.startswith(b"%PDF")


def test_measurement_page_refuses_an_unreadable_spacing(measure_client, phantom_files):
    _, png = phantom_files
    response = measure_client.post("/screen", files={"file": ("opg.png", png.read_bytes())},
                                   data={"pixel_spacing_mm": "ten"})
    assert response.status_code == 400 and 'role="alert"' in response.text and "not a number" in response.text


# ----------------------------------------------------------------------------- hardening


def test_unknown_host_is_refused_and_allowed_hosts_extend_the_list():
    evil = TestClient(web.create_app(model=FakeModel()), base_url="http://rebind.example")
    assert evil.get("/").status_code == 400
    allowed = TestClient(web.create_app(model=FakeModel(), allowed_hosts=web.allowed_host_names(
        "192.168.1.20", ["opg.clinic.lan"])), base_url="http://opg.clinic.lan:8000")
    assert allowed.get("/").status_code == 200
    assert web.allowed_host_names("0.0.0.0")[:2] == ["127.0.0.1", "localhost"]  # not 'every interface'
    ipv6 = TestClient(web.create_app(model=FakeModel()), base_url="http://[::1]:8000")
    assert ipv6.get("/").status_code == 200
    spoofed = client_for().get("/", headers={"Host": "127.0.0.1.rebind.example:8000"})
    assert spoofed.status_code == 400 and "--allowed-host" in spoofed.json()["detail"]


@pytest.mark.parametrize("headers, status", [
    ({"Origin": "http://evil.example"}, 403), ({"Origin": "null"}, 403), ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Origin": "http://testserver"}, 200), ({"Sec-Fetch-Site": "same-origin"}, 200), ({}, 200),
])
def test_cross_site_posts_are_refused_before_screening(headers, status):
    model = FakeModel()
    client = client_for(model)
    for url in ("/screen", "/api/v1/screen"):
        response = client.post(url, files={"file": ("a.png", png_bytes())}, headers=headers)
        assert response.status_code == status, (url, response.text)
    assert model.calls == (2 if status == 200 else 0)


@pytest.mark.parametrize("head", [b"\x02\x00\x00\x00UL\x04\x00", b"\x08\x00\x16\x00UI\x1a\x00"])
def test_sniff_preambleless_dicom(head):
    assert web.sniff_image_type(head + bytes(40)) == "dicom"


def test_preambleless_dicom_is_accepted(tmp_path):
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    pixels = (np.random.default_rng(3).random((240, 480)) * 60000).astype(np.uint16)
    write_dicom(tmp_path / "a.dcm", pixels, 0.1, patient_id=PATIENT_ID)
    with_meta = (tmp_path / "a.dcm").read_bytes()[132:]           # no preamble, file meta kept
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, pydicom.dcmread(tmp_path / "a.dcm"))      # no preamble, no file meta
    model = FakeModel()
    client = client_for(model)
    for data in (with_meta, buf.getvalue()):
        response = client.post("/api/v1/screen", files={"file": ("a.dcm", data)})
        assert response.status_code == 200, response.text
    assert model.calls == 2


def _asgi_post(app, chunks: list[bytes], *, then: str = "end", path: str = "/api/v1/screen"):
    """Drive the app directly: send ``chunks``, then end the body, 'disconnect' or 'stall' (never send more).
    Returns the response status."""
    body, ctype = multipart(png_bytes())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", ctype.encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    parts = list(chunks) if chunks else [body]
    sent: list[dict] = []

    async def receive() -> dict:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts) or then != "end"}
        if then == "disconnect":
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()   # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> int:
        await app(scope, receive, send)
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    return run


def test_client_disconnect_is_one_log_line(caplog):
    app = web.create_app(model=FakeModel())
    body, _ = multipart(png_bytes())
    caplog.set_level(logging.INFO)
    status = asyncio.run(_asgi_post(app, [body[:100]], then="disconnect")())
    assert status == 400
    records = [r for r in caplog.records if "disconnect" in r.getMessage()]
    assert len(records) == 1 and records[0].name == "osteopano.web.app"
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"


def test_a_stalled_body_is_408_and_does_not_hold_a_screening_slot():
    model = FakeModel()
    app = web.create_app(model=model, workers=1, queue_size=0, body_timeout_s=1.0)
    body, _ = multipart(png_bytes())

    async def both() -> tuple[int, int]:
        stalled = asyncio.ensure_future(_asgi_post(app, [body[:200]], then="stall")())
        await asyncio.sleep(0.1)
        real = await _asgi_post(app, [])()          # served while the other is still trickling
        assert not stalled.done()
        return real, await stalled

    real, stalled = asyncio.run(both())
    assert real == 200 and stalled == 408 and model.calls == 1


def test_a_small_file_that_inflates_to_a_huge_image_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (8000, 5000)).save(buf, format="PNG")   # 40 Mpx of zeros: a few tens of kB
    assert len(buf.getvalue()) < 200_000
    model = FakeModel()
    response = client_for(model).post("/api/v1/screen", files={"file": ("bomb.png", buf.getvalue())})
    assert response.status_code == 413 and "40 megapixels" in response.json()["detail"]
    assert model.calls == 0


def test_the_server_pixel_budget_bounds_images_in_flight():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    model.supports_heatmaps = False  # no Grad-CAM lock: the workers may call the model at once
    # each 96 x 48 upload is 4608 px: two fit in a 10000 px budget; the third waits for room (never decoded
    # meanwhile) and is screened once one of the first two is done
    client = client_for(model, workers=3, queue_size=0, pixel_budget_megapixels=0.01, max_megapixels=0.01)
    results: list = []
    threads = [threading.Thread(target=lambda name=name: results.append(
        client.post("/api/v1/screen", files={"file": (name, png_bytes())}))) for name in ("a.png", "b.png", "c.png")]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["in_flight"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert model.calls == 2  # the third holds no budget: it has not reached the model
    finally:
        gate.set()
        for t in threads:
            t.join(15)
    assert sorted(r.status_code for r in results) == [200, 200, 200] and model.calls == 3


class FailingMeasureModel(FakeModel):
    """A model whose score comes back while the cortex measurement failed."""

    measures = True

    def predict(self, image, heatmap: bool = False, pixel_spacing_mm=None, covariates=None) -> ScreeningResult:
        return super().predict(image, heatmap).replace(error="cortex measurement failed: border not found")


def test_model_score_with_a_failed_measurement():
    client = client_for(FailingMeasureModel())
    page = client.post("/screen", files={"file": ("a.png", png_bytes())})
    assert page.status_code == 200 and 'id="probability"' in page.text
    assert 'id="mcw-failed"' in page.text and "border not found" in page.text
    response = client.post("/api/v1/measure", files={"file": ("a.png", png_bytes())})
    assert response.status_code == 422 and "border not found" in response.json()["detail"]


def test_measurement_mode_keeps_patient_data_out_of_logs(measure_client, phantom_files, tmp_path, caplog):
    pixels = np.asarray(read_image(phantom_files[0]).pixels * 65535, dtype=np.uint16)
    dcm = tmp_path / "Janet_Doe_1950.dcm"
    write_dicom(dcm, pixels, 0.3, patient_id=PATIENT_ID, PatientName=PATIENT_NAME)
    caplog.set_level(logging.DEBUG)
    response = measure_client.post("/api/v1/measure", files={"file": (dcm.name, dcm.read_bytes())})
    assert response.status_code == 200, response.text
    assert PATIENT_ID not in response.text and "Doe^Janet" not in response.text
    assert any(r.name == "osteopano.web.app" for r in caplog.records), "the app logged nothing to check"
    for secret in (PATIENT_ID, "Doe", "Janet", dcm.name, "1950"):
        assert secret not in caplog.text


def test_page_and_reports_are_built_without_temporary_files(monkeypatch, measure_client, phantom_files):
    import tempfile

    import weasyprint  # noqa: F401 - loading its C libraries (ctypes.util.find_library) uses a temporary file

    def refuse(*args, **kwargs):
        raise AssertionError("a temporary file was made while screening")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile",
                 "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, refuse)
    dcm, _ = phantom_files
    response = measure_client.post("/screen", files={"file": ("opg.dcm", dcm.read_bytes())})
    assert response.status_code == 200, response.text
    pdf = re.search(r'href="(/report/[^"]+/pdf)"', response.text).group(1)
    assert measure_client.get(pdf).content.startswith(b"%PDF")


def test_serve_without_a_model_runs_measurement_mode(monkeypatch, capsys, tmp_path):
    import uvicorn
    from screen_support import run_cli

    served: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    code, _, err = run_cli(monkeypatch, capsys, "serve", "--port", "8123", "--threshold-mm", "2.5",
                           "--allowed-host", "opg.lan", "--keep-uploads", str(tmp_path / "kept"))
    assert code == 0, err
    assert "measurement mode" in err and served["port"] == 8123
    service = served["app"].state.service
    assert not service.has_model and service.measures and service.model.threshold_mm == 2.5
    client = TestClient(served["app"], base_url="http://opg.lan")
    assert "2.5&nbsp;mm" in client.get("/").text
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o700
    code, _, err = run_cli(monkeypatch, capsys, "serve", str(tmp_path / "no-such-run"))
    assert code != 0 and "model not found" in err and "Traceback" not in err


def test_dicom_upload_offers_the_sr_and_the_overlay_in_the_source_study(measure_client, phantom_files):
    import pydicom

    dcm, png = phantom_files
    source = pydicom.dcmread(dcm)
    html = measure_client.post("/screen", files={"file": ("opg.dcm", dcm.read_bytes())}).text
    links = {fmt: url for url, fmt in re.findall(r'href="(/report/[^"]+/(sr|sc|html|pdf))"', html)}
    assert {"sr", "sc"} <= set(links)
    downloads = {}
    for fmt in ("sr", "sc"):
        response = measure_client.get(links[fmt])
        assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
        downloads[fmt] = pydicom.dcmread(io.BytesIO(response.content))
    sr, sc = downloads["sr"], downloads["sc"]
    assert sr.Modality == "SR" and sr.StudyInstanceUID == sc.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert source.SOPInstanceUID in str(sr)   # the SR references the measured image
    assert (sc.Rows, sc.Columns) == (source.Rows, source.Columns) and sc.SamplesPerPixel == 3
    # a PNG has no study to join: no DICOM outputs
    assert 'id="report-sr"' not in measure_client.post("/screen", files={"file": ("opg.png", png.read_bytes())}).text
