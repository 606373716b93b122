"""The clinic web page and REST API (FastAPI): upload a panoramic radiograph, get the screening result.

``create_app(model_path)`` builds the app; ``osteopano serve`` runs it with uvicorn.

Routes
    ``GET /``                 upload page (drag-and-drop or file picker)
    ``POST /screen``          the page's form upload -> result page (HTML)
    ``GET /report/{token}/{html|pdf}``  the result's report, downloadable once, for a short time
    ``POST /api/v1/screen``   multipart field ``file`` (+ ``?heatmap=true``) -> JSON result
    ``GET /api/v1/model``     the model card
    ``GET /healthz``          liveness and load
    ``GET /docs``, ``GET /openapi.json``  API documentation (rendered here: no CDN)

Limits and privacy, in the order a request meets them:

1. ``Content-Length`` above the upload limit -> 413 before anything is read.
2. More than ``workers + queue_size`` screenings in flight -> 503 with ``Retry-After``.
3. The multipart body is streamed into memory by our own parser (Starlette's would spool
   files over 1 MB to a temporary file on disk) and its bytes are counted, so a lying or
   missing length is still capped -> 413.
4. The file type is judged from its first bytes, never from its name -> 415.
5. Decoding and inference run in a bounded ``ThreadPoolExecutor``; an unreadable image -> 422
   with the reason; a screening slower than ``timeout_s`` -> 504 (its slot stays taken until the
   worker really finishes, so a stuck model cannot pile up work).

Uploads stay in memory and are written nowhere unless ``keep_uploads`` names a folder. Reports
are built in memory (HTML and its PDF, never a file) and served once from an in-memory store.
Log lines hold sizes, types, status codes and timings only: no file names, patient IDs, DICOM
tags or results.
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
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from osteopano import __version__
from osteopano.render import reports
from osteopano.render.display import display_u8, heatmap_overlay
from osteopano.render.templating import environment
from osteopano.render.texts import DISCLAIMER, decision_text, format_probability, plain_language
from osteopano.errors import ImageReadError, OsteopanoError
from osteopano.io.files import atomic_write_bytes, atomic_write_json
from osteopano.io.images import Radiograph, read_image_bytes

log = logging.getLogger("osteopano.web.app")

MAX_PIXELS = 60_000_000          # decoded size limit (a large panoramic is ~15 Mpx)
MULTIPART_OVERHEAD = 64 * 1024   # boundaries and part headers allowed on top of the file itself
DISPLAY_WIDTH = 1400             # images on the result page are shrunk to this width
REPORT_TTL_S = 15 * 60           # a report waits this long for its download
REPORT_MAX_ITEMS = 64            # ... and at most this many results are kept (oldest dropped)
RETRY_AFTER_S = 5
STATIC_DIR = Path(__file__).with_name("static")

# Magic numbers of the formats we accept; anything else is refused with 415 before decoding.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"II*\x00", "tiff"),
    (0, b"MM\x00*", "tiff"),
    (0, b"II+\x00", "tiff"),   # BigTIFF
    (0, b"MM\x00+", "tiff"),
    (0, b"BM", "bmp"),
    (128, b"DICM", "dicom"),
)

T = TypeVar("T")


def sniff_image_type(head: bytes) -> str | None:
    """The image format named by the file's first bytes ('png', 'jpeg', 'tiff', 'bmp', 'dicom'), or None."""
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


class WebError(Exception):
    """A request that ends with an error status and a message for the user."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


# ----------------------------------------------------------------------------- upload reading


@dataclass
class Upload:
    data: bytes
    filename: str | None
    kind: str  # sniffed format


async def read_multipart_file(request: Request, field_name: str, limit: int) -> tuple[bytes, str | None]:
    """Stream a multipart/form-data body and return (bytes, client file name) of ``field_name``.

    Everything stays in memory; more than ``limit`` file bytes (or a body far above it) -> 413.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise WebError(400, f"send the image as multipart/form-data in a field named '{field_name}'")
    too_large = WebError(413, f"upload is larger than the limit of {limit / 2**20:g} MB")
    part: dict[str, Any] = {}
    found: dict[str, Any] = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers=[], name=b"", value=b"", data=None, filename=None)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"].append((part["name"].lower(), part["value"]))
        part["name"], part["value"] = b"", b""

    def on_headers_finished() -> None:
        disposition = dict(part["headers"]).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        if options.get(b"name", b"").decode("utf-8", "replace") == field_name and "file" not in found:
            part["data"] = bytearray()
            filename = options.get(b"filename")
            part["filename"] = filename.decode("utf-8", "replace") if filename is not None else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("data") is not None:
            part["data"] += data[start:end]
            if len(part["data"]) > limit:
                raise too_large

    def on_part_end() -> None:
        if part.get("data") is not None:
            found["file"], found["filename"] = bytes(part["data"]), part["filename"]

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + MULTIPART_OVERHEAD:
                raise too_large
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise WebError(400, f"malformed multipart body ({exc})") from None
    if "file" not in found:
        raise WebError(400, f"no file in the upload (expected a multipart field named '{field_name}')")
    if not found["file"]:
        raise WebError(422, "the uploaded file is empty (0 bytes)")
    return found["file"], found["filename"]


def _safe_filename(name: str | None) -> str | None:
    """The last path component of a client's file name, printable and at most 120 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:120] or None


# ----------------------------------------------------------------------------- in-memory report store


class ReportStore:
    """Finished reports in memory, keyed by a random token; each file is handed out once.

    Entries expire after ``ttl_s`` seconds; past ``max_items`` the oldest is dropped, so the store
    never grows without bound.
    """

    def __init__(self, ttl_s: float = REPORT_TTL_S, max_items: int = REPORT_MAX_ITEMS):
        self.ttl_s, self.max_items = ttl_s, max_items
        self._items: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, files: dict[str, bytes]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._purge()
            self._items[token] = (time.monotonic() + self.ttl_s, dict(files))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return token

    def take(self, token: str, fmt: str) -> bytes | None:
        """The file once; None when unknown, expired or already downloaded."""
        with self._lock:
            self._purge()
            entry = self._items.get(token)
            if entry is None:
                return None
            data = entry[1].pop(fmt, None)
            if not entry[1]:
                del self._items[token]
            return data

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._items)

    def _purge(self) -> None:
        now = time.monotonic()
        for token in [t for t, (expiry, _) in self._items.items() if expiry <= now]:
            del self._items[token]


# ----------------------------------------------------------------------------- the screening service


@dataclass
class Screening:
    """What one upload produced (kept only for the response)."""

    radiograph: Radiograph
    result: Any  # ScreeningResult


class Service:
    """The model behind a bounded worker pool, with admission control and a per-request timeout."""

    def __init__(self, model: Any, *, max_upload_mb: float, workers: int, queue_size: int, timeout_s: float,
                 keep_uploads: Path | None):
        if workers < 1 or queue_size < 0:
            raise ValueError("workers must be >= 1 and queue_size >= 0")
        self.model = model
        self.max_upload_bytes = int(max_upload_mb * 2**20)
        self.capacity = workers + queue_size
        self.timeout_s = timeout_s
        self.keep_uploads = Path(keep_uploads) if keep_uploads is not None else None
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="osteopano-screen")
        self.reports = ReportStore()
        self._in_flight = 0
        self._lock = threading.Lock()
        # Grad-CAM hooks the shared network, so a heatmap is only right when no other forward pass
        # runs meanwhile: engines that make heatmaps (torch) predict one image at a time.
        self.heatmaps = bool(getattr(model, "supports_heatmaps", True))
        self._model_lock = threading.Lock() if getattr(model, "supports_heatmaps", False) else None

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

    async def screen(self, request: Request, job: Callable[[Upload], T]) -> tuple[Upload, T]:
        """Admit, read and sniff the upload, run ``job`` in the pool; every failure is a WebError."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_upload_bytes + MULTIPART_OVERHEAD:
            raise WebError(413, f"upload is larger than the limit of {self.max_upload_bytes / 2**20:g} MB")
        if not self._acquire():
            raise WebError(503, f"the server is busy ({self.capacity} screenings in progress or queued); "
                           f"try again in a few seconds", {"Retry-After": str(RETRY_AFTER_S)})
        future: Future | None = None
        try:
            data, filename = await read_multipart_file(request, "file", self.max_upload_bytes)
            kind = sniff_image_type(data[:132])
            if kind is None:
                raise WebError(415, "unsupported file type: the content is not a PNG, JPEG, TIFF, BMP or "
                               "DICOM image")
            upload = Upload(data=data, filename=_safe_filename(filename), kind=kind)
            future = self.executor.submit(job, upload)
            future.add_done_callback(self._release)
        finally:
            if future is None:
                self._release()
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

    def run_model(self, upload: Upload, *, heatmap: bool) -> Screening:
        """Decode and predict (in a worker thread); ImageReadError for unreadable content."""
        radiograph = read_image_bytes(upload.data, upload.filename or "upload", max_pixels=MAX_PIXELS)
        heatmap = heatmap and self.heatmaps
        if self._model_lock is None:
            result = self.model.predict(radiograph, heatmap=heatmap)
        else:
            with self._model_lock:
                result = self.model.predict(radiograph, heatmap=heatmap)
        if getattr(result, "error", None):
            raise ImageReadError("upload", str(result.error))
        screening = Screening(radiograph=radiograph, result=result)
        if self.keep_uploads is not None:
            self._keep(upload, result)
        return screening

    def _keep(self, upload: Upload, result: Any) -> None:
        """Save the upload and its result under a random name (never the client's file name)."""
        stem = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
        ext = {"jpeg": "jpg", "dicom": "dcm", "tiff": "tif"}.get(upload.kind, upload.kind)
        atomic_write_bytes(self.keep_uploads / f"{stem}.{ext}", upload.data)
        atomic_write_json(self.keep_uploads / f"{stem}.json", _result_summary(result, self.model))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _result_summary(result: Any, model: Any) -> dict[str, Any]:
    return {
        "probability": float(result.probability),
        "decision": bool(result.decision),
        "threshold": float(result.threshold),
        "model_id": str(getattr(result, "model_id", None) or model.model_id),
    }


# ----------------------------------------------------------------------------- images for the page


def _shrink(image: np.ndarray, width: int = DISPLAY_WIDTH) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _encode(image: np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **params)
    return buf.getvalue()


def _data_uri(image: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(_encode(_shrink(image), "JPEG", quality=88)).decode()


def heatmap_png(heatmap: np.ndarray) -> bytes:
    """The heatmap ([0, 1] float) as an 8-bit grey PNG: 0 = no contribution, 255 = the strongest."""
    return _encode((np.clip(np.asarray(heatmap, np.float32), 0, 1) * 255).round().astype(np.uint8))


# ----------------------------------------------------------------------------- API schema


class ScreenResponse(BaseModel):
    probability: float = Field(description="Model score in [0, 1]: the estimated probability of osteoporosis")
    decision: bool = Field(description="True = refer for DXA (probability >= threshold)")
    decision_text: str = Field(description="The decision in words")
    threshold: float = Field(description="The model's decision threshold")
    model_id: str = Field(description="Names the exact model weights")
    heatmap_png_base64: str | None = Field(None, description="Grad-CAM heatmap, 8-bit grey PNG at the "
                                           "image's size (with ?heatmap=true, torch engine)")
    heatmap_note: str | None = Field(None, description="Why no heatmap was returned, when one was asked for")
    filename: str | None = Field(None, description="The uploaded file's name, as sent")
    synthetic_training_data: bool | None = Field(None, description="True when the model was trained on "
                                                 "synthetic phantoms (results are not clinical evidence)")
    disclaimer: str


class ErrorResponse(BaseModel):
    detail: str


_ERRORS = {
    400: "Not a multipart upload with a 'file' field.",
    413: "The upload is larger than the limit.",
    415: "The content is not a PNG, JPEG, TIFF, BMP or DICOM image.",
    422: "The image could not be decoded (the reason is given).",
    503: "Too many screenings in flight; retry after the Retry-After seconds.",
    504: "The screening took longer than the server's timeout.",
}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "Panoramic radiograph: PNG, JPEG, TIFF, BMP or DICOM"}}}}}}}


# ----------------------------------------------------------------------------- the app


class _SecurityHeaders:
    """ASGI middleware: a strict Content-Security-Policy (no resource outside this server), no caching of
    anything but static files, no referrer, no framing."""

    CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

    def __init__(self, app: Any):
        self.app = app

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
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _load_model(model_path: str | Path) -> Any:
    from osteopano.screen.screener import load

    return load(model_path, engine="auto")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


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


def create_app(model_path: str | Path | None = None, *, model: Any = None, max_upload_mb: float = 50,
               workers: int = 2, queue_size: int = 8, timeout_s: float = 60,
               keep_uploads: str | Path | None = None) -> FastAPI:
    """Build the web app around the model at ``model_path`` (run folder or .onnx file).

    ``model`` injects an already loaded model instead (anything with ``predict(radiograph, heatmap=)``,
    ``card`` and ``model_id``; tests use it). ``keep_uploads``: a folder that receives every upload
    and its result; None (the default) keeps nothing on disk.
    """
    if model is None:
        if model_path is None:
            raise ValueError("create_app needs model_path or model")
        model = _load_model(model_path)
    if keep_uploads is not None:
        Path(keep_uploads).mkdir(parents=True, exist_ok=True)
    service = Service(model, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size,
                      timeout_s=timeout_s, keep_uploads=keep_uploads)
    card = _jsonable(dict(model.card))
    synthetic = _synthetic(card)
    threshold, threshold_rule = _threshold(model, card)
    templates = environment()
    # pydicom's warnings about odd elements can quote tag values (names, IDs): keep them out of the logs.
    logging.getLogger("pydicom").setLevel(logging.ERROR)

    app = FastAPI(
        title="osteopano",
        version=__version__,
        description="Screen a dental panoramic radiograph for signs of osteoporosis (referral to DXA). "
        + DISCLAIMER,
        docs_url=None, redoc_url=None,
        lifespan=_lifespan(service),
    )
    app.state.service = service
    app.add_middleware(_SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(
            card=card, synthetic=synthetic, disclaimer=DISCLAIMER, max_upload_mb=max_upload_mb,
            version=__version__, model_threshold=threshold, threshold_rule=threshold_rule,
            keeps_uploads=keep_uploads is not None, test_metrics=_test_metrics(card),
            test_n=(card.get("test_metrics") or {}).get("n"), **context)
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(WebError)
    async def _web_error(request: Request, exc: WebError) -> Response:
        log.info("%s %s -> %d", request.method, request.url.path, exc.status)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
        response = page("index.html", exc.status, error=exc.detail)
        response.headers.update(exc.headers)
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return page("index.html")

    @app.post("/screen", response_class=HTMLResponse, include_in_schema=False)
    async def screen_page(request: Request) -> HTMLResponse:
        started = time.perf_counter()
        upload, view = await service.screen(request, lambda up: _page_job(service, card, up))
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

    @app.post("/api/v1/screen", response_model=ScreenResponse, openapi_extra=_UPLOAD_BODY,
              responses={code: {"model": ErrorResponse, "description": text} for code, text in _ERRORS.items()},
              summary="Screen one radiograph")
    async def api_screen(request: Request, heatmap: bool = Query(
            False, description="Also return the Grad-CAM heatmap as a base64 8-bit grey PNG "
                               "(torch engine only)")) -> JSONResponse:
        """Upload one panoramic radiograph (multipart field `file`) and get the probability of
        osteoporosis, the referral decision at the model's threshold and, on request, the heatmap."""
        started = time.perf_counter()
        upload, screening = await service.screen(request, lambda up: service.run_model(up, heatmap=heatmap))
        result = screening.result
        body = ScreenResponse(
            **_result_summary(result, model),
            decision_text=decision_text(bool(result.decision)),
            filename=upload.filename,
            synthetic_training_data=synthetic,
            disclaimer=DISCLAIMER,
        )
        if heatmap:
            if getattr(result, "heatmap", None) is not None:
                body.heatmap_png_base64 = base64.b64encode(heatmap_png(result.heatmap)).decode()
            else:
                body.heatmap_note = "this model's engine does not produce heatmaps (use the PyTorch run folder)"
        log.info("api screening: %s, %.0f kB, %.2f s", upload.kind, len(upload.data) / 1024,
                 time.perf_counter() - started)
        return JSONResponse(body.model_dump())

    @app.get("/api/v1/model", summary="The model card")
    async def model_card() -> JSONResponse:
        """The model's card: id, backbone, classes, threshold and its rule, training data, test metrics."""
        return JSONResponse(card)

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_id": str(model.model_id), "in_flight": service.in_flight,
                "capacity": service.capacity}

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


def _page_job(service: Service, card: dict[str, Any], upload: Upload) -> dict[str, Any]:
    """Worker-thread part of the page: predict with heatmap, draw the images, build the reports."""
    screening = service.run_model(upload, heatmap=True)
    radiograph, result = screening.radiograph, screening.result
    overlay = None  # uint8 RGB
    if getattr(result, "heatmap", None) is not None:
        overlay = heatmap_overlay(radiograph.pixels, result.heatmap)
    html, pdf = reports.build_report(radiograph, result, card, heatmap_overlay=overlay)  # in memory only
    token = service.reports.put({"html": html.encode("utf-8"), "pdf": pdf})
    return {
        "result": result,
        "probability_pct": 100.0 * float(result.probability),
        "threshold_pct": 100.0 * float(result.threshold),
        "score": format_probability(result.probability),
        "threshold_text": format_probability(result.threshold),
        "decision_text": decision_text(bool(result.decision)),
        "texts": plain_language(result),
        "radiograph_uri": _data_uri(display_u8(radiograph.pixels)),
        "overlay_uri": _data_uri(overlay) if overlay is not None else None,
        "heatmap_empty": overlay is not None and not np.any(np.asarray(result.heatmap) > 0),
        "size": f"{radiograph.pixels.shape[1]} x {radiograph.pixels.shape[0]} px",
        "report_token": token,
        "report_formats": ["html", "pdf"],
    }
