"""The screening service behind the web app: the upload read (bounded in size, time and concurrent
readers), then admitted (a slot of ``workers + queue_size`` and room in the decoded-pixel budget),
then screened in a bounded thread pool with a timeout. Every failure is a ``WebError``.

Only what the answer shows is computed: ``POST /api/v1/screen`` answers with the model's score, so
the cortex (about 0.3 s of CPU for a 2943 x 1435 radiograph, five times the rest) is measured there
only when the risk index can use the width - age, sex or weight sent, or a DICOM upload, whose header
may hold them - or when the model itself needs it (an ROI model). The page and ``/api/v1/measure``
always measure (docs/speed.md)."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request

from osteopano.errors import ImageReadError, OsteopanoError
from osteopano.io.files import atomic_write_bytes
from osteopano.io.images import Radiograph, read_image_bytes
from osteopano.web.budget import (
    MAX_REQUEST_MPX,
    SERVER_BUDGET_MPX,
    PixelBudget,
    image_pixels,
)
from osteopano.web.store import ReportStore
from osteopano.web.upload import (
    MULTIPART_OVERHEAD,
    Upload,
    WebError,
    as_part10,
    read_multipart_file,
    safe_filename,
    sniff_image_type,
)

RETRY_AFTER_S = 5
BODY_TIMEOUT_S = 30.0            # an upload must arrive in full within this
SPACING_FIELD = "pixel_spacing_mm"

T = TypeVar("T")

RISK_FIELDS = ("age", "sex", "weight_kg")           # form fields of the risk index, which may use the width


def parse_spacing(text: str | None) -> float | None:
    """The ``pixel_spacing_mm`` form field: None when empty, else a plausible mm/px value (400 otherwise)."""
    if text is None or not text.strip():
        return None
    from osteopano.errors import DataError
    from osteopano.io.spacing import check_spacing

    try:
        return check_spacing(text.strip().replace(",", "."), SPACING_FIELD)
    except DataError as exc:
        raise WebError(400, str(exc)) from None



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
        self.scorer = _score_only(model)  # the same screener without the measurement (None: not one)
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
                                                               text_fields=(SPACING_FIELD, "age", "sex", "weight_kg"),
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
        if not self._acquire():
            raise busy
        future: Future | None = None
        deadline = time.monotonic() + self.timeout_s

        def budgeted(up: Upload, sp: float | None) -> T:
            # the worker takes the pixel budget when it starts decoding, waiting for room (never 503)
            if not self.pixels.reserve(pixels, timeout=max(0.0, deadline - time.monotonic())):
                raise OsteopanoError("the server had no memory free for this image in time; try again later")
            try:
                return job(up, sp)
            finally:
                self.pixels.release(pixels)

        def done(_future: Future | None = None) -> None:
            self._release()

        try:
            future = self.executor.submit(budgeted, upload, spacing)
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

    def run(self, upload: Upload, spacing: float | None = None, *, heatmap: bool = False,
            measure: bool = True) -> Screening:
        """Decode, measure and/or predict (in a worker thread); OsteopanoError when nothing came out.
        ``measure=False`` skips the cortex measurement where the model does not need it (module text;
        ``needs_measurement`` says when a score-only answer still needs it)."""
        data = as_part10(upload.data) if upload.kind == "dicom" else upload.data
        radiograph = read_image_bytes(data, upload.filename or "upload", max_pixels=self.max_pixels)
        heatmap = heatmap and self.heatmaps
        model = self.model if measure or self.scorer is None else self.scorer
        if self._model_lock is None:
            result = model.predict(radiograph, heatmap=heatmap, pixel_spacing_mm=spacing)
        else:
            with self._model_lock:
                result = model.predict(radiograph, heatmap=heatmap, pixel_spacing_mm=spacing)
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


def needs_measurement(upload: Upload) -> bool:
    """Whether a score-only answer still needs the cortex measured: the risk index may use the width when
    age, sex or weight was sent, or for a DICOM upload (whose header may hold them)."""
    return upload.kind == "dicom" or any((upload.fields.get(k) or "").strip() for k in RISK_FIELDS)


def _score_only(model: Any) -> Any:
    """A copy of a measuring ``Screener`` with a model that does not measure (an ROI model still does:
    its input needs the measurement); None for anything else."""
    from osteopano.screen.screener import Screener

    if not isinstance(model, Screener) or model.engine is None or not model.measure:
        return None
    lean = copy.copy(model)
    lean.measure = False
    return lean


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
