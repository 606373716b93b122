"""The web service computes only what the answer shows (osteopano.web.service): /api/v1/screen on a
measuring server does not measure the cortex unless the risk index can use it; the page and
/api/v1/measure still measure; the score is the same either way."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import phantom_u8
from fastapi.testclient import TestClient
from PIL import Image
from web_model import build_small_model

from osteopano.cortex import measure as cortex
from osteopano.io.images import write_dicom
from osteopano.web.app import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    _, onnx_file, _ = build_small_model(tmp_path_factory.getbasetemp() / "web-model")
    with TestClient(create_app(onnx_file, measure=True)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(phantom_u8(5, width=1200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def measured(monkeypatch) -> list[int]:
    """Counts cortex measurements."""
    calls: list[int] = []
    original = cortex.measure

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cortex, "measure", counting)
    return calls


def _post(client, path: str, data: bytes, name: str = "opg.png", **fields: str):
    response = client.post(path, files={"file": (name, data)}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def test_screen_api_skips_the_measurement_it_does_not_show(client, png, measured):
    lean = _post(client, "/api/v1/screen", png)
    assert measured == [] and lean["risk"] is None
    full = _post(client, "/api/v1/measure", png)
    assert measured == [1] and full["mcw_px"] is not None
    assert full["model"]["probability"] == pytest.approx(lean["probability"], abs=1e-6)


def test_screen_api_measures_when_the_risk_index_can_use_the_width(client, png, measured):
    body = _post(client, "/api/v1/screen", png, age="70", sex="F", weight_kg="55")
    assert measured == [1] and body["risk"] is not None


def test_screen_api_measures_a_dicom_upload(client, tmp_path, measured):
    path = tmp_path / "opg.dcm"
    write_dicom(path, phantom_u8(5, width=1200).astype(np.uint16) * 16, 0.1, BitsStored=12, PatientAge="070Y",
                PatientSex="F")
    _post(client, "/api/v1/screen", Path(path).read_bytes(), name="opg.dcm")
    assert measured == [1]


def test_the_page_still_measures(client, png, measured):
    response = client.post("/screen", files={"file": ("opg.png", png)})
    assert response.status_code == 200 and measured == [1]
