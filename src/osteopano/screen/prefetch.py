"""Decode and prepare images on worker threads, ahead of (and overlapped with) inference.

``prefetch(items, prepare_fn, workers)`` is an ordered, bounded ``map``: at most ``ahead`` items are
in flight, results come back in input order, and only those items are held in memory - so a 10^6
image archive streams in flat memory. Threads suffice because the heavy steps release the GIL
(``cv2.imdecode``, ``cv2.resize``, CLAHE, numpy's conversions).

``iter_screen_prefetched`` is ``Screener.iter_screen`` with every image's staging (read, gate,
spacing, measurement, preparation) done by ``prefetch``; the network (and Grad-CAM) stays on the
calling thread. ``osteopano predict`` and ``measure`` screen through it (``screen.batch``).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar


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


def iter_screen_prefetched(screener: Any, images: Iterable[Any], *, heatmap: bool = False, batch_size: int = 16,
                           pixel_spacing_mm: float | None = None, spacings: Mapping[Path, float] | None = None,
                           covariates: Mapping[str, Any] | None = None, workers: int | None = None,
                           clinical: Mapping[str, Any] | None = None,
                           clinical_manifest: Mapping[Path, Mapping[str, Any]] | None = None
                           ) -> Iterator[list[tuple[Any, Any]]]:
    """``Screener.iter_screen`` (same batches, same results) with each image's read, gate, spacing,
    measurement and preparation (``Screener._stage``) on ``workers`` threads, overlapped with the
    network, which stays on the calling thread with Grad-CAM. At most ``batch_size + 2 * workers``
    images are decoded at a time."""
    if heatmap and not screener.supports_heatmaps:
        warnings.warn(f"no heatmaps: {screener.heatmap_unavailable}", stacklevel=3)
        heatmap = False
    if batch_size < 1:
        raise OsteopanoError(f"batch size must be at least 1, got {batch_size}")
    workers = default_workers() if workers is None else max(1, int(workers))
    spacings = spacings or {}
    risk_inputs = (clinical or {}, clinical_manifest or {})

    def stage(item: Any) -> tuple[Any, Any, Any]:
        return screener._stage(item, pixel_spacing_mm, spacings, covariates, risk_inputs)

    chunk: list[tuple[Any, Any, Any]] = []
    for _, staged in prefetch(images, stage, workers, ahead=batch_size + 2 * workers):
        chunk.append(staged)
        if len(chunk) == batch_size:
            yield _score(screener, chunk, heatmap)
            chunk = []
    if chunk:
        yield _score(screener, chunk, heatmap)


def _score(screener: Any, staged: list[tuple[Any, Any, Any]], heatmap: bool) -> list[tuple[Any, Any]]:
    """The network half of the screener (``Screener._score``) on already staged images."""
    return screener._score(staged, heatmap)
