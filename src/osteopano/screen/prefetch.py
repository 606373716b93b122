"""Decode and prepare images on worker threads, ahead of (and overlapped with) inference.

``prefetch(items, prepare_fn, workers)`` is an ordered, bounded ``map``: at most ``ahead`` items are
in flight, results come back in input order, and only those items are held in memory - so a 10^6
image archive streams in flat memory. Threads suffice because the heavy steps release the GIL
(``cv2.imdecode``, ``cv2.resize``, CLAHE, numpy's conversions).

``predict_prefetched`` is ``Engine.iter_predict`` with the reading and ``model_input`` of every
image done by ``prefetch``; the network (and Grad-CAM) stays on the calling thread.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from osteopano.errors import OsteopanoError

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """One preparing thread per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def prefetch(items: Iterable[T], prepare_fn: Callable[[T], R], workers: int | None = None,
             ahead: int | None = None) -> Iterator[tuple[T, R]]:
    """Yield ``(item, prepare_fn(item))`` in input order, computing up to ``ahead`` (default 4 per
    worker) items ahead on ``workers`` threads (default: one per core; 1 = inline, no thread).
    An exception in ``prepare_fn`` is raised here, at its item; stopping early cancels the rest."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1:
        for item in items:
            yield item, prepare_fn(item)
        return
    ahead = max(1, ahead or 4 * workers)
    source = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="osteopano-prepare")
    try:
        for item in source:
            pending.append((item, pool.submit(prepare_fn, item)))
            if len(pending) >= ahead:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(source, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(prepare_fn, nxt)))
            yield item, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END: Any = object()


def predict_prefetched(engine: Any, images: Iterable[Any], *, heatmap: bool = False, batch_size: int = 16,
                       pixel_spacing_mm: float | None = None, covariates: dict[str, Any] | None = None,
                       workers: int | None = None, keep_pixels: bool = True
                       ) -> Iterator[list[tuple[Any, Any]]]:
    """Like ``engine.iter_predict`` (same batches, same results), with reading and preparation on
    ``workers`` threads overlapped with inference. ``keep_pixels=False`` says the caller needs no
    full-resolution pixels afterwards (no heatmap, measurement or report): a large JPEG may then be
    decoded at reduced resolution where the engine's preprocessing recipe allows it
    (``Preprocess.decode_side``)."""
    from osteopano.screen.batch import ScreeningResult
    from osteopano.screen.engines import _name, _path_of, as_radiograph

    if batch_size < 1:
        raise OsteopanoError(f"batch size must be at least 1, got {batch_size}")
    side = None
    if not keep_pixels and not heatmap and engine.input_spec.get("mode") == "whole":
        side = getattr(engine.preprocess, "decode_side", lambda: None)()

    def prepare(item: Any) -> tuple[Any, Any, str | None]:
        try:
            if side is not None and not isinstance(item, np.ndarray) and hasattr(item, "__fspath__"):
                from osteopano.io.images import read_image

                image = read_image(item, reduce_to=side)
            else:
                image = as_radiograph(item)
            spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
            return image, engine.model_input(image, spacing, covariates), None
        except OsteopanoError as exc:
            return None, None, str(exc)
        except ValueError as exc:  # an array that is not an image
            return None, None, f"{_name(item)}: {exc}"

    def finish(chunk: list[tuple[Any, tuple[Any, Any, str | None]]]) -> list[tuple[Any, Any]]:
        ready = [prepared for _, (_, prepared, _) in chunk if prepared is not None]
        probs = iter(engine.probabilities(np.stack([i.x for i in ready]), np.stack([i.covariates for i in ready]))
                     if ready else [])
        out = []
        for item, (image, prepared, error) in chunk:
            path = _path_of(item, image)
            if image is None:
                out.append((ScreeningResult(path, None, None, None, engine.threshold, engine.model_id, error), None))
                continue
            p = float(next(probs))
            spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
            out.append((ScreeningResult(path, image.patient_id, p, p >= engine.threshold, engine.threshold,
                                        engine.model_id, None, engine._heatmap(image, prepared) if heatmap else None,
                                        spacing), image))
        return out

    chunk: list[tuple[Any, tuple[Any, Any, str | None]]] = []
    for item, outcome in prefetch(images, prepare, workers, ahead=batch_size + 2 * (workers or default_workers())):
        chunk.append((item, outcome))
        if len(chunk) == batch_size:
            yield finish(chunk)
            chunk = []
    if chunk:
        yield finish(chunk)
