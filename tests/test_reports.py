"""Per-image screening reports (osteopano.render.reports): HTML content, self-containment, PDF, plain language."""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from markupsafe import escape

from osteopano.render import reports
from osteopano.io.images import from_array

from osteopano.render.texts import DISCLAIMER as _DISCLAIMER
from osteopano.render.texts import NOT_SCREENED, REFER

DISCLAIMER = str(escape(_DISCLAIMER))  # as the (Jinja-escaped) HTML carries it


@pytest.fixture(scope="module")
def metrics() -> dict:
    """A real metrics.json layout, from the evaluation module on a small fixed test set."""
    pytest.importorskip("sklearn", reason="the metrics layout comes from osteopano.metrics.evaluation (scikit-learn)")
    from osteopano.metrics.evaluation import compute_metrics

    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.45, 0.6, 0.35, 0.5, 0.7, 0.8, 0.9])
    m = compute_metrics(y, p, 0.4, n_boot=200)
    m["evaluated_on"] = "test split (held out from training and threshold choice)"
    return m


def _card(metrics: dict, synthetic: bool | None = True) -> dict:
    description = {True: "Phantom radiographs from osteopano synth", False: "Hospital radiographs, 2019-2023",
                   None: "Images of unrecorded origin"}[synthetic]
    return {"model_id": "run7-0123abcd", "backbone": "efficientnet_lite0", "classes": ["normal", "osteoporosis"],
            "threshold": {"value": 0.4, "rule": "youden", "how_chosen": "Youden's J on validation (n=20)"},
            "training_data": {"synthetic": synthetic, "description": description, "n_images": 80},
            "test_metrics": metrics, "osteopano_version": "0.1.0", "trained": "2026-11-26T18:22:49+00:00"}


def _result(**changes) -> SimpleNamespace:
    fields = dict(path="/clinic/room2/phantom_0001.png", patient_id="PH0001", probability=0.7342, decision=True,
                  threshold=0.4, model_id="run7-0123abcd", error=None, heatmap=None, pixel_spacing_mm=0.1)
    return SimpleNamespace(**{**fields, **changes})


def _measurement(right: float | None = 2.4, left: float | None = 2.8, quality: str = "ok") -> SimpleNamespace:
    widths = [w for w in (right, left) if w is not None]
    return SimpleNamespace(right=SimpleNamespace(mcw_mm=right), left=SimpleNamespace(mcw_mm=left),
                           mcw_mm=float(np.mean(widths)) if widths else None, threshold_mm=3.0,
                           quality=quality, klemetti_estimate="C2", decision=bool(widths) and np.mean(widths) < 3)


@pytest.fixture(scope="module")
def radiograph():
    """A small grey 'radiograph' wider than the HTML image width, so the embedded copies are downscaled."""
    yy, xx = np.mgrid[:150, :1500]
    pixels = (0.2 + 0.6 * np.exp(-((yy - 100) ** 2) / 800.0) * (xx / 1500)).astype(np.float32)
    return from_array(pixels, pixel_spacing_mm=0.1)


def _images(html: str) -> list[np.ndarray]:
    uris = re.findall(r'<img[^>]*src="([^"]+)"', html)
    out = []
    for uri in uris:
        assert uri.startswith("data:image/png;base64,")
        png = np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8)
        out.append(cv2.imdecode(png, cv2.IMREAD_UNCHANGED))
    return out


def test_html_content_and_self_contained(radiograph, metrics):
    overlay = np.zeros((*radiograph.pixels.shape, 3), np.uint8)
    overlay[..., 0] = 200
    html = reports.render_html(radiograph, _result(), _card(metrics), heatmap_overlay=overlay,
                               measurement=_measurement())
    assert "0.734" in html and "0.400" in html  # score and threshold, 3 decimals
    assert "Refer for DXA bone-density assessment" in html
    assert DISCLAIMER in html
    assert "SYNTHETIC PHANTOM" in html and "Synthetic phantom images" in html
    assert "PH0001" in html and "phantom_0001.png" in html and "/clinic/room2" not in html  # no folder names
    assert "Youden" in html and "run7-0123abcd" in html and "efficientnet_lite0" in html
    sens = metrics["sensitivity"]
    assert f"{100 * sens['value']:.0f}% (95% CI {100 * sens['ci'][0]:.0f}\u2013{100 * sens['ci'][1]:.0f}%" in html
    assert f"{metrics['auc']['value']:.2f} (95% CI" in html
    assert "2.40 mm" in html and "2.80 mm" in html and "(below 3 mm)" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(link|script)\b", html)
    images = _images(html)
    assert len(images) == 2
    assert all(im.shape[1] == reports.HTML_WIDTH for im in images)  # 1500 px wide -> downscaled
    assert images[0].ndim == 2 and images[1].ndim == 3
    assert images[1][..., 2].mean() > 150 and images[1][..., 0].mean() < 5  # RGB overlay stored as true colour


@pytest.mark.parametrize("synthetic", [False, None])
def test_synthetic_only_when_the_card_says_so(radiograph, metrics, synthetic):
    html = reports.render_html(radiograph, _result(), _card(metrics, synthetic))
    assert "synthetic" not in html.lower()
    assert ("provenance of this model is unknown" in html) == (synthetic is None)


def test_missing_card_keys_degrade_gracefully(radiograph):
    for card in (None, {}, {"training_data": "?", "test_metrics": {"auc": {"value": None, "note": "one class"}}}):
        html = reports.render_html(radiograph, _result(patient_id=None, model_id=None), card)
        assert "0.734" in html and DISCLAIMER in html
        assert "Patient ID" not in html
        assert "provenance of this model is unknown" in html


def test_cortical_width_in_pixels_when_spacing_unknown(radiograph):
    m = _measurement(None, None)
    m.right.mcw_px, m.left.mcw_px, m.mcw_px = 31.0, 35.0, 33.0
    html = reports.render_html(radiograph, _result(), None, measurement=m)
    assert "31.0 px (pixel spacing unknown)" in html and "33.0 px" in html and "below 3 mm" not in html


def test_not_screened_result(radiograph, metrics):
    result = _result(probability=None, decision=None, error="scan.png: not an image (cannot identify)")
    html = reports.render_html(radiograph, result, _card(metrics))
    assert NOT_SCREENED in html and "not an image" in html
    assert 'class="bar"' not in html and "Refer for DXA" not in html


def test_threshold_override_and_empty_heatmap(radiograph, metrics):
    overlay = np.zeros((*radiograph.pixels.shape, 3), np.uint8)
    result = _result(threshold=0.3, heatmap=np.zeros(radiograph.pixels.shape, np.float32))
    html = reports.render_html(radiograph, result, _card(metrics), heatmap_overlay=overlay)
    assert "0.300" in html and "the model&#39;s own threshold is 0.400" in html
    assert "heatmap is empty" in html
    html = reports.render_html(radiograph, _result(heatmap=np.eye(*radiograph.pixels.shape, dtype=np.float32)),
                               _card(metrics), heatmap_overlay=overlay)
    assert "own threshold" not in html and "heatmap is empty" not in html and "Warm colours" in html


def test_plain_language():
    refer = reports.plain_language(_result())
    assert set(refer) == {"dentist", "patient"}
    assert "refer for dxa bone-density assessment" in refer["dentist"].lower() and "0.734" in refer["dentist"]
    assert "DXA" in refer["patient"] and "painless" in refer["patient"] and "0.734" not in refer["patient"]
    clear = reports.plain_language(_result(probability=0.21, decision=False), _measurement())
    assert "no referral suggested by this screen" in clear["dentist"].lower()
    assert "2.40 mm" in clear["dentist"] and "3 mm" in clear["dentist"]
    assert "despite the model's negative score" in clear["dentist"]  # thin cortex, negative model
    assert "did not find" in clear["patient"]
    unmeasured = reports.plain_language(_result(), _measurement(None, None, quality="failed"))
    assert "could not be measured" in unmeasured["dentist"]
    no_spacing = reports.plain_language(_result(), _measurement(None, None, quality="ok"))
    assert "pixel spacing is" in no_spacing["dentist"] and "unknown" in no_spacing["dentist"]
    failed = reports.plain_language(_result(probability=None, decision=None, error="bad file"))
    assert "could not be screened" in failed["dentist"] and "says nothing about your bones" in failed["patient"]


def test_write_report_files(tmp_path, radiograph, metrics):
    overlay = np.full((*radiograph.pixels.shape, 3), 90, np.uint8)
    paths = reports.write_report(tmp_path / "out", radiograph, _result(path="C:/x/a b&c.dcm"), _card(metrics),
                                 overlay, _measurement())
    assert paths == {"html": tmp_path / "out" / "a_b_c.html", "pdf": tmp_path / "out" / "a_b_c.pdf"}
    html = paths["html"].read_text(encoding="utf-8")
    assert "0.734" in html and DISCLAIMER in html
    from pypdf import PdfReader

    pdf = PdfReader(paths["pdf"])
    width, height = (float(v) for v in pdf.pages[0].mediabox[2:])
    assert abs(width - 595.28) < 1 and abs(height - 841.89) < 1  # A4
    text = " ".join(" ".join(page.extract_text().split()) for page in pdf.pages)
    # the PDF is rendered from the same HTML: the same score, decision and disclaimer
    assert "0.734" in text and REFER in text and " ".join(_DISCLAIMER.split()[:8]) in text
    error_paths = reports.write_report(tmp_path / "out", radiograph, _result(path=None, probability=None,
                                       decision=None, error="broken"), None)
    assert error_paths["pdf"].name == "report.pdf" and error_paths["pdf"].read_bytes().startswith(b"%PDF")
