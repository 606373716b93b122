"""The clinic web page and REST API (FastAPI): upload a panoramic radiograph, get the screening result.

``create_app(model_path)`` builds the app; ``osteopano serve`` runs it with uvicorn. Without a model
(``model_path=None``) the page and the API run in **measurement mode**: the mandibular cortical width
(``osteopano.cortex``) is the screen, with the classical decision (MCW below ``threshold_mm``). With a
model the page shows the model's score and the measurement side by side.

Routes
    ``GET /``                 upload page (drag-and-drop or file picker, optional pixel spacing)
    ``POST /screen``          the page's form upload -> result page (HTML)
    ``GET /report/{token}/{html|pdf|sr|sc}``  the result's report (and, for a DICOM upload, the DICOM
                              Structured Report and overlay Secondary Capture), each downloadable once
    ``POST /api/v1/screen``   multipart field ``file`` (+ ``?heatmap=true``) -> the model's result (JSON)
    ``POST /api/v1/measure``  multipart ``file`` (+ ``pixel_spacing_mm``) -> the cortex measurement (JSON)
    ``GET /api/v1/model``     the model card
    ``GET /healthz``          liveness and load
    ``GET /docs``, ``GET /openapi.json``  API documentation (rendered here: no CDN)

Modules: ``security`` (Host and Origin checks, headers), ``service`` (admission, pool, timeouts),
``upload`` (multipart reading, type sniffing), ``budget`` (decoded pixels), ``measurement`` (the cortex
measurement as shown), ``report`` (the downloadable report), ``store`` (reports in memory), ``schema``.

Limits and privacy, in the order a request meets them:

1. The ``Host`` header must name an allowed host (DNS rebinding) -> 400; a POST whose ``Origin`` is
   another site -> 403 (cross-site form posts).
2. ``Content-Length`` above the upload limit -> 413 before anything is read.
3. More than ``max_readers`` bodies being received at once -> 503; the body must arrive in full
   within ``body_timeout_s`` -> 408. It is streamed into memory by our own parser
   (``osteopano.web.upload``), its bytes counted, so a lying or missing length is still capped -> 413.
4. The file type is judged from its first bytes, never from its name -> 415; its decoded size is read
   from its header: above ``max_megapixels`` -> 413, beyond the server's pixel budget for images being
   screened at once -> 503 (``osteopano.web.budget``: a small "zip bomb" file cannot exhaust memory).
5. Only then is a screening slot taken: more than ``workers + queue_size`` in flight -> 503 with
   ``Retry-After`` (so clients trickling bytes cannot lock real requests out).
6. Decoding, measuring and inference run in a bounded ``ThreadPoolExecutor``; an unreadable or refused
   image -> 422 with the reason; a screening slower than ``timeout_s`` -> 504 (its slot stays taken
   until the worker really finishes, so a stuck model cannot pile up work).

Uploads stay in memory and are written nowhere unless ``keep_uploads`` names a folder (files at mode
0600). Reports are built in memory (HTML and its PDF, never a file) and served once from an in-memory
store. Log lines hold sizes, types, status codes and timings only: no file names, patient IDs, DICOM
tags or results; a client that disconnects is one log line.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from osteopano import __version__
from osteopano.render.display import display_u8, heatmap_overlay
from osteopano.render.templating import environment
from osteopano.render.texts import (
    DISCLAIMER,
    decision_text,
    format_probability,
    plain_language,
)
from osteopano.web.budget import MAX_REQUEST_MPX, SERVER_BUDGET_MPX
from osteopano.web.measurement import risk_view, with_risk
from osteopano.web.schema import (
    ERRORS,
    UPLOAD_BODY,
    ErrorResponse,
    MeasureResponse,
    ModelScore,
    ScreenResponse,
)
from osteopano.web.security import SecurityHeaders, allowed_host_names
from osteopano.web.service import (
    BODY_TIMEOUT_S,
    Service,
    _json_default,
    needs_measurement,
)
from osteopano.web.store import ReportStore
from osteopano.web.upload import (
    ClientDisconnect,
    Upload,
    WebError,
    as_part10,
    sniff_image_type,
)

__all__ = ["ReportStore", "Service", "WebError", "allowed_host_names", "create_app", "heatmap_png", "sniff_image_type"]

log = logging.getLogger("osteopano.web.app")

DISPLAY_WIDTH = 1400             # images on the result page are shrunk to this width
STATIC_DIR = Path(__file__).with_name("static")
REPORT_MEDIA = {"html": ("text/html; charset=utf-8", "osteopano-report.html"),
                "pdf": ("application/pdf", "osteopano-report.pdf"),
                "sr": ("application/dicom", "osteopano-sr.dcm"),          # the measurement report (TID 1500)
                "sc": ("application/dicom", "osteopano-overlay-sc.dcm")}  # the overlay, Secondary Capture



# ----------------------------------------------------------------------------- images for the page


def _encode(image: np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **params)
    return buf.getvalue()


def _data_uri(image: np.ndarray) -> str:
    from osteopano.render.display import shrink

    return "data:image/jpeg;base64," + base64.b64encode(_encode(shrink(image, DISPLAY_WIDTH), "JPEG",
                                                                quality=88)).decode()


def heatmap_png(heatmap: np.ndarray) -> bytes:
    """The heatmap ([0, 1] float) as an 8-bit grey PNG: 0 = no contribution, 255 = the strongest."""
    return _encode((np.clip(np.asarray(heatmap, np.float32), 0, 1) * 255).round().astype(np.uint8))


# ----------------------------------------------------------------------------- the app


def _load_model(model_path: str | Path | None, threshold_mm: float, measure: bool) -> Any:
    from osteopano.screen.screener import load

    return load(model_path, engine="auto", measure=measure, threshold_mm=threshold_mm)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def _synthetic(card: dict[str, Any]) -> bool | None:
    training = card.get("training_data") or {}
    value = training.get("synthetic") if isinstance(training, dict) else None
    return value if isinstance(value, bool) else None


def _threshold(model: Any, card: dict[str, Any]) -> tuple[float | None, str | None]:
    """The model's decision threshold and the rule that chose it (the card holds {'value', 'rule'})."""
    entry = card.get("threshold")
    rule = entry.get("rule") if isinstance(entry, dict) else card.get("threshold_rule")
    value = getattr(model, "threshold", None)
    if value is None:
        value = entry.get("value") if isinstance(entry, dict) else entry
    return (float(value) if isinstance(value, (int, float)) else None), (str(rule) if rule else None)


def _test_metrics(card: dict[str, Any]) -> list[tuple[str, str]]:
    """Sensitivity, specificity and AUC from the card's test metrics as ('name', '0.812 (95% CI a-b)')."""
    metrics = card.get("test_metrics") or {}
    rows = []
    for key, label in (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("auc", "AUC")):
        entry = metrics.get(key)
        value = entry.get("value") if isinstance(entry, dict) else entry
        if not isinstance(value, (int, float)):
            continue
        ci = entry.get("ci") if isinstance(entry, dict) else None
        text = f"{value:.3f}" + (f" (95% CI {ci[0]:.3f}\u2013{ci[1]:.3f})" if ci and None not in ci else "")
        rows.append((label, text))
    return rows


def create_app(model_path: str | Path | None = None, *, model: Any = None, measure: bool = True,
               threshold_mm: float = 3.0, max_upload_mb: float = 50, workers: int = 2, queue_size: int = 8,
               timeout_s: float = 60, body_timeout_s: float = BODY_TIMEOUT_S, keep_uploads: str | Path | None = None,
               allowed_hosts: Sequence[str] | None = None, max_megapixels: float = MAX_REQUEST_MPX,
               pixel_budget_megapixels: float = SERVER_BUDGET_MPX) -> FastAPI:
    """Build the web app around the model at ``model_path`` (run folder or .onnx file), or without a
    model (``None``: measurement mode, the cortical width is the screen).

    ``model`` injects an already loaded screener instead (anything with ``predict(radiograph, heatmap=,
    pixel_spacing_mm=)``, ``card`` and ``model_id``; tests use it). ``measure``: with a model, also
    measure the cortex (the page shows both). ``threshold_mm``: the classical MCW threshold.
    ``keep_uploads``: a folder that receives every upload and its result (mode 0600); None (the default)
    keeps nothing on disk. ``allowed_hosts``: the Host names answered (default ``allowed_host_names()``).
    ``max_megapixels``: the largest decoded image; ``pixel_budget_megapixels``: all images being screened
    at once (``osteopano.web.budget``).
    """
    if model is None:
        model = _load_model(model_path, threshold_mm, measure)
    if keep_uploads is not None:
        Path(keep_uploads).mkdir(parents=True, exist_ok=True, mode=0o700)
    service = Service(model, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size,
                      timeout_s=timeout_s, keep_uploads=keep_uploads, body_timeout_s=body_timeout_s,
                      max_megapixels=max_megapixels, pixel_budget_megapixels=pixel_budget_megapixels)
    card = _jsonable(dict(model.card or {}))
    synthetic = _synthetic(card)
    threshold, threshold_rule = _threshold(model, card)
    mcw_threshold = float(getattr(model, "threshold_mm", threshold_mm))
    templates = environment()
    # pydicom's warnings about odd elements can quote tag values (names, IDs): keep them out of the logs.
    logging.getLogger("pydicom").setLevel(logging.ERROR)

    app = FastAPI(
        title="osteopano",
        version=__version__,
        description="Screen a dental panoramic radiograph for signs of osteoporosis (referral to DXA): the "
        "model's score when the server runs a model, the mandibular cortical width in every mode. " + DISCLAIMER,
        docs_url=None, redoc_url=None,
        lifespan=_lifespan(service),
    )
    app.state.service = service
    app.add_middleware(SecurityHeaders, allowed_hosts=list(allowed_hosts or allowed_host_names()))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("error", None)
        html = templates.get_template(name).render(
            card=card, has_model=service.has_model, measures=service.measures, synthetic=synthetic,
            disclaimer=DISCLAIMER, max_upload_mb=max_upload_mb, version=__version__, model_threshold=threshold,
            threshold_rule=threshold_rule, mcw_threshold=mcw_threshold, keeps_uploads=keep_uploads is not None,
            test_metrics=_test_metrics(card), test_n=(card.get("test_metrics") or {}).get("n"), **context)
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError) -> Response:
        log.info("%s %s -> %d", request.method, request.url.path, exc.status)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
        response = page("index.html", exc.status, error=exc.detail)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, _exc: ClientDisconnect) -> Response:
        log.info("%s %s: the client disconnected before the upload was complete", request.method,
                 request.url.path)
        return Response(status_code=400)   # nobody is listening any more

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return page("index.html")

    @app.post("/screen", response_class=HTMLResponse, include_in_schema=False)
    async def screen_page(request: Request) -> HTMLResponse:
        started = time.perf_counter()
        upload, view = await service.screen(request, lambda up, mm: _page_job(service, card, up, mm))
        log.info("page screening: %s, %.0f kB, %.2f s", upload.kind, len(upload.data) / 1024,
                 time.perf_counter() - started)
        return page("result.html", filename=upload.filename, **view)

    @app.get("/report/{token}/{fmt}", include_in_schema=False)
    async def report(token: str, fmt: str) -> Response:
        if fmt not in REPORT_MEDIA:
            raise WebError(404, "unknown report format (html, pdf, sr or sc)")
        data = service.reports.take(token, fmt)
        if data is None:
            raise WebError(404, "this report has expired or was already downloaded; upload the image again")
        media, filename = REPORT_MEDIA[fmt]
        return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.post("/api/v1/screen", response_model=ScreenResponse, openapi_extra=UPLOAD_BODY,
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()},
              summary="Screen one radiograph with the model")
    async def api_screen(request: Request, heatmap: bool = Query(
            False, description="Also return the Grad-CAM heatmap as a base64 8-bit grey PNG "
                               "(torch engine only)")) -> JSONResponse:
        """Upload one panoramic radiograph (multipart field `file`; optional `age`, `sex`, `weight_kg` for
        the OST risk index under `risk`) and get the probability of
        osteoporosis, the referral decision at the model's threshold and, on request, the heatmap.
        Needs a server started with a model (409 otherwise: use `/api/v1/measure`)."""
        if not service.has_model:
            raise WebError(409, "this server runs without a model (measurement mode): use POST /api/v1/measure")
        started = time.perf_counter()
        upload, screening = await service.screen(
            request, lambda up, mm: with_risk(service.run(up, mm, heatmap=heatmap, measure=needs_measurement(up)),
                                              up.fields))
        result = screening.result
        body = ScreenResponse(**_model_score(result).model_dump(exclude={"decision_text"}),
                              decision_text=decision_text(bool(result.decision)), filename=upload.filename,
                              synthetic_training_data=synthetic, disclaimer=DISCLAIMER)
        if heatmap:
            if getattr(result, "heatmap", None) is not None:
                body.heatmap_png_base64 = base64.b64encode(heatmap_png(result.heatmap)).decode()
            else:
                body.heatmap_note = "this model's engine does not produce heatmaps (use the PyTorch run folder)"
        log.info("api screening: %s, %.0f kB, %.2f s", upload.kind, len(upload.data) / 1024,
                 time.perf_counter() - started)
        return JSONResponse(_jsonable({**body.model_dump(), "risk": risk_view(getattr(result, "risk", None))}))

    @app.post("/api/v1/measure", response_model=MeasureResponse, openapi_extra=UPLOAD_BODY,
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()},
              summary="Measure the mandibular cortical width")
    async def api_measure(request: Request) -> JSONResponse:
        """Upload one panoramic radiograph (multipart field `file`, optional `pixel_spacing_mm`, and `age`,
        `sex`, `weight_kg` for the OST risk index and the combined MCW+OST rule under `risk`, see
        docs/clinic.md; DICOM PatientAge/PatientSex/PatientWeight are used when the fields are empty) and get the
        mandibular cortical width per side, its quality, the classical decision (MCW below the threshold),
        the plain-language texts and the traced polylines; with a model, its score as well."""
        if not service.measures:
            raise WebError(409, "this server's screener does not measure the cortex")
        started = time.perf_counter()
        upload, screening = await service.screen(request, lambda up, mm: with_risk(service.run(up, mm), up.fields))
        if screening.result.measurement is None:   # a model scored it, the measurement failed
            raise WebError(422, str(screening.result.error or "the cortical width could not be measured"))
        body = _measure_response(screening.result, upload.filename)
        log.info("api measurement: %s, %.0f kB, %.2f s", upload.kind, len(upload.data) / 1024,
                 time.perf_counter() - started)
        return JSONResponse(_jsonable({**body.model_dump(), "risk": risk_view(getattr(screening.result, "risk", None))}))

    @app.get("/api/v1/model", summary="The model card")
    async def model_card() -> JSONResponse:
        """The model's card: id, backbone, classes, threshold and its rule, training data, test metrics
        (404 in measurement mode)."""
        if not service.has_model:
            raise WebError(404, "this server runs without a model (measurement mode)")
        return JSONResponse(card)

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "mode": "model" if service.has_model else "measure",
                "model_id": str(model.model_id) if service.has_model else None,
                "measures": service.measures, "in_flight": service.in_flight, "capacity": service.capacity}

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return page("web_docs.html", spec=app.openapi())

    return app


def _lifespan(service: Service) -> Callable:
    """Shut the worker pool down with the app."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.shutdown()

    return lifespan


def _model_score(result: Any) -> ModelScore:
    return ModelScore(probability=float(result.probability), decision=bool(result.decision),
                      decision_text=decision_text(bool(result.decision)), threshold=float(result.threshold),
                      model_id=str(result.model_id))


def _measure_response(result: Any, filename: str | None) -> MeasureResponse:
    from osteopano.render.texts import measurement_texts
    from osteopano.web.measurement import measurement_view

    m = result.measurement
    view = measurement_view(m)
    scored = result.probability is not None
    return MeasureResponse(
        filename=filename, pixel_spacing_mm=result.pixel_spacing_mm, spacing_source=result.spacing_source,
        mcw_mm=view["mcw_mm"], mcw_px=view["mcw_px"], quality=m.quality, decision=m.decision,
        decision_text=view["decision_text"], threshold_mm=view["threshold_mm"], sides=view["sides"],
        notes=view["notes"], texts=plain_language(result, m) if scored else measurement_texts(m),
        measurement=m.to_json(), model=_model_score(result) if scored else None, disclaimer=DISCLAIMER)


def _page_job(service: Service, card: dict[str, Any], upload: Upload, spacing: float | None) -> dict[str, Any]:
    """Worker-thread part of the page: screen (with heatmap), draw the images, build the reports."""
    from osteopano.render.texts import classical_decision_text, measurement_texts
    from osteopano.web.measurement import (
        measurement_view,
        overlay_rgb,
    )
    from osteopano.web.report import build_dicom_outputs, build_web_report

    screening = with_risk(service.run(upload, spacing, heatmap=service.has_model), upload.fields)
    radiograph, result = screening.radiograph, screening.result
    m = getattr(result, "measurement", None)
    scored = result.probability is not None
    heat = None  # uint8 RGB
    if getattr(result, "heatmap", None) is not None:
        heat = heatmap_overlay(radiograph.pixels, result.heatmap)
    cortex = overlay_rgb(radiograph, m) if m is not None else None
    html, pdf = build_web_report(radiograph, result, card, heatmap_overlay=heat, measurement=m,
                                 cortex_overlay=cortex)   # in memory only
    files = {"html": html.encode("utf-8"), "pdf": pdf}
    dicom_formats: list[str] = []
    if upload.kind == "dicom" and m is not None:
        try:
            dicom = build_dicom_outputs(as_part10(upload.data), result, cortex)
        except Exception as exc:  # noqa: BLE001 - an odd source header must not cost the page its result
            log.info("no DICOM SR/SC for this upload (%s)", type(exc).__name__)  # the message may quote tags
        else:
            files.update(dicom)
            dicom_formats = sorted(dicom, reverse=True)   # 'sr', 'sc'
    token = service.reports.put(files)
    view: dict[str, Any] = {
        "result": result,
        "scored": scored,
        "texts": plain_language(result, m) if scored else measurement_texts(m),
        "decision_text": decision_text(bool(result.decision)) if scored else classical_decision_text(m),
        "radiograph_uri": _data_uri(display_u8(radiograph.pixels)),
        "overlay_uri": _data_uri(heat) if heat is not None else None,
        "heatmap_empty": heat is not None and not np.any(np.asarray(result.heatmap) > 0),
        "mcw": measurement_view(m) if m is not None else None,
        "risk": risk_view(getattr(result, "risk", None)),
        "cortex_uri": _data_uri(cortex) if cortex is not None else None,
        "spacing_source": result.spacing_source,
        "size": f"{radiograph.pixels.shape[1]} x {radiograph.pixels.shape[0]} px",
        "report_token": token,
        "report_formats": ["html", "pdf"],
        "dicom_formats": dicom_formats,
        "is_dicom": upload.kind == "dicom",
    }
    if scored:
        view.update(probability_pct=100.0 * float(result.probability), threshold_pct=100.0 * float(result.threshold),
                    score=format_probability(result.probability), threshold_text=format_probability(result.threshold))
    return view
