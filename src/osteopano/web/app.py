"""The clinic web page and REST API (FastAPI): upload a panoramic radiograph, get the screening result.

``create_app(model_path)`` builds the app; ``osteopano serve`` runs it with uvicorn. Without a model
(``model_path=None``) the page and the API run in **measurement mode**: the mandibular cortical width
(``osteopano.cortex``) is the screen, with the classical decision (MCW below ``threshold_mm``). With a
model the page shows the model's score and the measurement side by side.

Routes
    ``GET /``                 upload page (drag-and-drop or file picker, optional pixel spacing)
    ``POST /screen``          the page's form upload -> result page (HTML)
    ``GET /report/{token}/{html|pdf}``  the result's report, downloadable once, for a short time
    ``POST /api/v1/screen``   multipart field ``file`` (+ ``?heatmap=true``) -> the model's result (JSON)
    ``POST /api/v1/measure``  multipart ``file`` (+ ``pixel_spacing_mm``) -> the cortex measurement (JSON)
    ``GET /api/v1/model``     the model card
    ``GET /healthz``          liveness and load
    ``GET /docs``, ``GET /openapi.json``  API documentation (rendered here: no CDN)

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

import asyncio
import base64
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from osteopano import __version__
from osteopano.errors import ImageReadError, OsteopanoError
from osteopano.io.files import atomic_write_bytes
from osteopano.io.images import Radiograph, read_image_bytes
from osteopano.render.display import display_u8, heatmap_overlay
from osteopano.render.templating import environment
from osteopano.render.texts import (
    DISCLAIMER,
    decision_text,
    format_probability,
    plain_language,
)
from osteopano.web.budget import (
    MAX_REQUEST_MPX,
    SERVER_BUDGET_MPX,
    PixelBudget,
    image_pixels,
)
from osteopano.web.schema import (
    ERRORS,
    UPLOAD_BODY,
    ErrorResponse,
    MeasureResponse,
    ModelScore,
    ScreenResponse,
)
from osteopano.web.store import ReportStore
from osteopano.web.upload import (
    MULTIPART_OVERHEAD,
    ClientDisconnect,
    Upload,
    WebError,
    as_part10,
    read_multipart_file,
    safe_filename,
    sniff_image_type,
)

__all__ = ["ReportStore", "Service", "WebError", "create_app", "heatmap_png", "sniff_image_type"]

log = logging.getLogger("osteopano.web.app")

DISPLAY_WIDTH = 1400             # images on the result page are shrunk to this width
RETRY_AFTER_S = 5
BODY_TIMEOUT_S = 30.0            # an upload must arrive in full within this
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
TEST_HOST = "testserver"         # the host name of Starlette's TestClient
STATIC_DIR = Path(__file__).with_name("static")
SPACING_FIELD = "pixel_spacing_mm"

T = TypeVar("T")


def allowed_host_names(bind_host: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The Host names the server answers to: the bind address (unless every interface), this computer's
    local names, the test client's, and ``extra`` (``--allowed-host``)."""
    names = list(extra)
    if bind_host and bind_host not in ("0.0.0.0", "::"):
        names.append(bind_host)
    names += [*LOCAL_HOSTS, TEST_HOST]
    return list(dict.fromkeys(n.strip().lower() for n in names if n and n.strip()))


def parse_spacing(text: str | None) -> float | None:
    """The ``pixel_spacing_mm`` form field: None when empty, else a plausible mm/px value (400 otherwise)."""
    if text is None or not text.strip():
        return None
    from osteopano.errors import DataError
    from osteopano.prepare.spacing import check_spacing

    try:
        return check_spacing(text.strip().replace(",", "."), SPACING_FIELD)
    except DataError as exc:
        raise WebError(400, str(exc)) from None


# ----------------------------------------------------------------------------- the screening service


@dataclass
class Screening:
    """What one upload produced (kept only for the response)."""

    radiograph: Radiograph
    result: Any  # ScreeningResult


class Service:
    """The screener behind a bounded worker pool, with admission control and timeouts.

    ``model``: a ``Screener`` (``osteopano.screen.screener``) or anything with ``predict(radiograph,
    heatmap=, pixel_spacing_mm=)``, ``card`` and ``model_id`` (None: no model, measurement mode)."""

    def __init__(self, model: Any, *, max_upload_mb: float, workers: int, queue_size: int, timeout_s: float,
                 keep_uploads: Path | None, body_timeout_s: float = BODY_TIMEOUT_S, max_readers: int | None = None,
                 max_megapixels: float = MAX_REQUEST_MPX, pixel_budget_megapixels: float = SERVER_BUDGET_MPX):
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.model = model
        self.has_model = getattr(model, "model_id", None) is not None
        self.measures = bool(getattr(model, "measures", False))
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self.capacity = workers + queue_size
        self.max_readers = max_readers or max(16, 2 * self.capacity)
        self.timeout_s, self.body_timeout_s = timeout_s, body_timeout_s
        self.keep_uploads = Path(keep_uploads) if keep_uploads is not None else None
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="osteopano-screen")
        self.reports = ReportStore()
        self.max_pixels = int(max_megapixels * 1e6)
        self.pixels = PixelBudget(int(max(pixel_budget_megapixels, max_megapixels) * 1e6))
        self._in_flight = 0
        self._reading = 0
        self._lock = threading.Lock()
        # Grad-CAM hooks the shared network, so a heatmap is only right when no other forward pass
        # runs meanwhile: engines that make heatmaps (torch) predict one image at a time.
        self.heatmaps = bool(getattr(model, "supports_heatmaps", False))
        self._model_lock = threading.Lock() if self.heatmaps else None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _acquire(self) -> bool:
        with self._lock:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def _release(self, _future: Future | None = None) -> None:
        with self._lock:
            self._in_flight -= 1

    async def read(self, request: Request) -> Upload:
        """Receive and sniff the upload (bounded in size, time and concurrent readers)."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_upload_bytes + MULTIPART_OVERHEAD:
            raise WebError(413, f"upload is larger than the limit of {self.max_upload_bytes / 2**20:g} MB")
        with self._lock:
            if self._reading >= self.max_readers:
                raise WebError(503, f"the server is busy receiving {self.max_readers} uploads; try again in a "
                               "few seconds", {"Retry-After": str(RETRY_AFTER_S)})
            self._reading += 1
        try:
            data, filename, fields = await read_multipart_file(request, "file", self.max_upload_bytes,
                                                               text_fields=(SPACING_FIELD,),
                                                               timeout_s=self.body_timeout_s)
        finally:
            with self._lock:
                self._reading -= 1
        kind = sniff_image_type(data[:132])
        if kind is None:
            raise WebError(415, "unsupported file type: the content is not a PNG, JPEG, TIFF, BMP or DICOM image")
        return Upload(data=data, filename=safe_filename(filename), kind=kind, fields=fields)

    async def screen(self, request: Request, job: Callable[[Upload, float | None], T]) -> tuple[Upload, T]:
        """Read the upload, then admit it and run ``job(upload, spacing)`` in the pool; failures are WebErrors."""
        upload = await self.read(request)
        spacing = parse_spacing(upload.fields.get(SPACING_FIELD))
        pixels = image_pixels(upload.data, upload.kind) or 0
        if pixels > self.max_pixels:
            raise WebError(413, f"the image is too large to screen here: {pixels / 1e6:.0f} megapixels decoded "
                           f"(limit {self.max_pixels / 1e6:g})")
        busy = WebError(503, f"the server is busy ({self.capacity} screenings in progress or queued); "
                        f"try again in a few seconds", {"Retry-After": str(RETRY_AFTER_S)})
        if not self.pixels.reserve(pixels):
            raise busy
        if not self._acquire():
            self.pixels.release(pixels)
            raise busy
        future: Future | None = None

        def done(_future: Future | None = None) -> None:
            self.pixels.release(pixels)
            self._release()

        try:
            future = self.executor.submit(job, upload, spacing)
            future.add_done_callback(done)
        finally:
            if future is None:
                done()
        try:
            outcome = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            raise WebError(504, f"the screening took longer than {self.timeout_s:g} s and was abandoned; "
                           "try again later") from None
        except ImageReadError as exc:
            raise WebError(422, f"the image could not be read: {exc.reason}") from None
        except OsteopanoError as exc:
            raise WebError(422, str(exc)) from None
        return upload, outcome

    def run(self, upload: Upload, spacing: float | None = None, *, heatmap: bool = False) -> Screening:
        """Decode, measure and/or predict (in a worker thread); OsteopanoError when nothing came out."""
        data = as_part10(upload.data) if upload.kind == "dicom" else upload.data
        radiograph = read_image_bytes(data, upload.filename or "upload", max_pixels=self.max_pixels)
        heatmap = heatmap and self.heatmaps
        if self._model_lock is None:
            result = self.model.predict(radiograph, heatmap=heatmap, pixel_spacing_mm=spacing)
        else:
            with self._model_lock:
                result = self.model.predict(radiograph, heatmap=heatmap, pixel_spacing_mm=spacing)
        failed = result.probability is None if self.has_model else getattr(result, "measurement", None) is None
        if failed:
            raise OsteopanoError(str(result.error or "the image could not be screened"))
        if self.keep_uploads is not None:
            self._keep(upload, result)
        return Screening(radiograph=radiograph, result=result)

    def _keep(self, upload: Upload, result: Any) -> None:
        """Save the upload and its result under a random name (never the client's file name), mode 0600."""
        stem = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        ext = {"jpeg": "jpg", "dicom": "dcm", "tiff": "tif"}.get(upload.kind, upload.kind)
        atomic_write_bytes(self.keep_uploads / f"{stem}.{ext}", upload.data, mode=0o600)
        summary = json.dumps(_result_summary(result), indent=2, default=_json_default) + "\n"
        atomic_write_bytes(self.keep_uploads / f"{stem}.json", summary.encode(), mode=0o600)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _result_summary(result: Any) -> dict[str, Any]:
    """The model's score (when there is one) and the measurement's row (when one was made)."""
    summary: dict[str, Any] = {}
    if result.probability is not None:
        summary.update(probability=float(result.probability), decision=bool(result.decision),
                       threshold=float(result.threshold), model_id=str(result.model_id))
    measurement = getattr(result, "measurement", None)
    if measurement is not None:
        summary["measurement"] = measurement.to_row()
    summary.update(pixel_spacing_mm=result.pixel_spacing_mm, spacing_source=result.spacing_source)
    return summary


def _json_default(obj: Any) -> Any:
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


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


class _SecurityHeaders:
    """ASGI middleware: a request whose ``Host`` is not in ``allowed_hosts`` is refused with 400 (DNS
    rebinding), a POST whose ``Origin`` (or ``Sec-Fetch-Site``) names another site with 403, both before
    the body is read; every response gets a strict Content-Security-Policy (no resource outside this
    server), no caching of anything but static files, referrers only to this server, no framing."""

    CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

    def __init__(self, app: Any, allowed_hosts: Sequence[str]):
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", self.CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"same-origin"),
                            (b"x-frame-options", b"DENY")]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        host = _host_name(scope)
        if host not in self.allowed_hosts:
            log.info("%s %s for a host name not allowed -> 400", scope["method"], scope["path"])
            response = JSONResponse({"detail": "refused: unknown host name (start the server with --allowed-host "
                                               "NAME to answer to it)"}, status_code=400)
            await response(scope, receive, send_with_headers)
            return
        if scope["method"] == "POST" and _cross_site(scope):
            log.info("POST %s from another site -> 403", scope["path"])
            response = JSONResponse({"detail": "refused: this form was sent from another web site"}, status_code=403)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _host_name(scope: dict) -> str | None:
    """The host name of the request's Host header, without the port (IPv6 brackets removed)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            try:
                return urlsplit("//" + value.decode("latin-1")).hostname
            except ValueError:
                return None
    return None


def _cross_site(scope: dict) -> bool:
    """True when a browser says the request comes from another origin than this server's Host."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False   # not a browser (curl, scripts): nothing to check
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()


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
    app.add_middleware(_SecurityHeaders, allowed_hosts=list(allowed_hosts or allowed_host_names()))
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
        if fmt not in ("html", "pdf"):
            raise WebError(404, "unknown report format (html or pdf)")
        data = service.reports.take(token, fmt)
        if data is None:
            raise WebError(404, "this report has expired or was already downloaded; upload the image again")
        media = "text/html; charset=utf-8" if fmt == "html" else "application/pdf"
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="osteopano-report.{fmt}"'})

    @app.post("/api/v1/screen", response_model=ScreenResponse, openapi_extra=UPLOAD_BODY,
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()},
              summary="Screen one radiograph with the model")
    async def api_screen(request: Request, heatmap: bool = Query(
            False, description="Also return the Grad-CAM heatmap as a base64 8-bit grey PNG "
                               "(torch engine only)")) -> JSONResponse:
        """Upload one panoramic radiograph (multipart field `file`) and get the probability of
        osteoporosis, the referral decision at the model's threshold and, on request, the heatmap.
        Needs a server started with a model (409 otherwise: use `/api/v1/measure`)."""
        if not service.has_model:
            raise WebError(409, "this server runs without a model (measurement mode): use POST /api/v1/measure")
        started = time.perf_counter()
        upload, screening = await service.screen(request, lambda up, mm: service.run(up, mm, heatmap=heatmap))
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
        return JSONResponse(body.model_dump())

    @app.post("/api/v1/measure", response_model=MeasureResponse, openapi_extra=UPLOAD_BODY,
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()},
              summary="Measure the mandibular cortical width")
    async def api_measure(request: Request) -> JSONResponse:
        """Upload one panoramic radiograph (multipart field `file`, optional `pixel_spacing_mm`) and get the
        mandibular cortical width per side, its quality, the classical decision (MCW below the threshold),
        the plain-language texts and the traced polylines; with a model, its score as well."""
        if not service.measures:
            raise WebError(409, "this server's screener does not measure the cortex")
        started = time.perf_counter()
        upload, screening = await service.screen(request, lambda up, mm: service.run(up, mm))
        if screening.result.measurement is None:   # a model scored it, the measurement failed
            raise WebError(422, str(screening.result.error or "the cortical width could not be measured"))
        body = _measure_response(screening.result, upload.filename)
        log.info("api measurement: %s, %.0f kB, %.2f s", upload.kind, len(upload.data) / 1024,
                 time.perf_counter() - started)
        return JSONResponse(_jsonable(body.model_dump()))

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
    from osteopano.web.measurement import measurement_texts, measurement_view

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
    from osteopano.web.measurement import (
        classical_decision_text,
        measurement_texts,
        measurement_view,
        overlay_rgb,
    )
    from osteopano.web.report import build_web_report

    screening = service.run(upload, spacing, heatmap=service.has_model)
    radiograph, result = screening.radiograph, screening.result
    m = getattr(result, "measurement", None)
    scored = result.probability is not None
    heat = None  # uint8 RGB
    if getattr(result, "heatmap", None) is not None:
        heat = heatmap_overlay(radiograph.pixels, result.heatmap)
    cortex = overlay_rgb(radiograph, m) if m is not None else None
    html, pdf = build_web_report(radiograph, result, card, heatmap_overlay=heat, measurement=m,
                                 cortex_overlay=cortex)   # in memory only
    token = service.reports.put({"html": html.encode("utf-8"), "pdf": pdf})
    view: dict[str, Any] = {
        "result": result,
        "scored": scored,
        "texts": plain_language(result, m) if scored else measurement_texts(m),
        "decision_text": decision_text(bool(result.decision)) if scored else classical_decision_text(m),
        "radiograph_uri": _data_uri(display_u8(radiograph.pixels)),
        "overlay_uri": _data_uri(heat) if heat is not None else None,
        "heatmap_empty": heat is not None and not np.any(np.asarray(result.heatmap) > 0),
        "mcw": measurement_view(m) if m is not None else None,
        "cortex_uri": _data_uri(cortex) if cortex is not None else None,
        "spacing_source": result.spacing_source,
        "size": f"{radiograph.pixels.shape[1]} x {radiograph.pixels.shape[0]} px",
        "report_token": token,
        "report_formats": ["html", "pdf"],
    }
    if scored:
        view.update(probability_pct=100.0 * float(result.probability), threshold_pct=100.0 * float(result.threshold),
                    score=format_probability(result.probability), threshold_text=format_probability(result.threshold))
    return view
