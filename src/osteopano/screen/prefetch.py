"""Decode and prepare images on worker threads or processes, ahead of (and overlapped with) inference.

``prefetch(items, prepare_fn, workers)`` is an ordered, bounded ``map``: at most ``ahead`` items are
in flight, results come back in input order, and only those items are held in memory - so a 10^6
image archive streams in flat memory.

``iter_screen_prefetched`` is ``Screener.iter_screen`` with every image's staging (read, gate,
spacing, measurement, preparation) done by ``prefetch``; the network (and Grad-CAM) stays on the
calling thread. ``osteopano predict`` and ``measure`` screen through it (``screen.batch``).

Threads or processes (docs/speed.md): decoding and preparing for the network spend their time in
OpenCV and large numpy operations, which release the GIL, so threads run them in parallel. The
cortex measurement is many small numpy steps that hold the GIL: on threads two images measure
barely faster than one (and each costs more CPU), so a screener that measures stages its images in
a small process pool instead (``processes=None`` chooses so). The processes are forked from a
forkserver that imports the measurement once (a fresh, single-threaded process: safe to fork
whatever threads the caller runs); each gets the staging state once, and returns each image's
result (and its pixels only when the caller draws or reports on them).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import signal
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
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
             ahead: int | None = None, *, pool: Executor | None = None) -> Iterator[tuple[T, R]]:
    """Yield ``(item, prepare_fn(item))`` in input order, computing up to ``ahead`` (default 4 per
    worker) items ahead on ``workers`` threads (default: one per core; 1 = inline, no thread), or on
    ``pool`` (e.g. a process pool; ``prepare_fn`` must then be picklable), which is shut down at the end.
    An exception in ``prepare_fn`` is raised here, at its item; stopping early cancels the rest."""
    workers = default_workers() if workers is None else max(1, int(workers))
    if workers == 1 and pool is None:
        for item in items:
            yield item, prepare_fn(item)
        return
    ahead = max(1, ahead or 4 * workers)
    source = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = pool or ThreadPoolExecutor(workers, thread_name_prefix="osteopano-prepare")
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
                           clinical_manifest: Mapping[Path, Mapping[str, Any]] | None = None,
                           processes: bool | None = None, keep_images: bool = True,
                           ) -> Iterator[list[tuple[Any, Any]]]:
    """``Screener.iter_screen`` (same batches, same results) with each image's read, gate, spacing,
    measurement and preparation (``Screener._stage``) on ``workers`` threads or processes, overlapped
    with the network, which stays on the calling thread with Grad-CAM. At most
    ``batch_size + 2 * workers`` images are decoded at a time.

    ``processes``: stage in a process pool (default: when the screener measures the cortex and
    ``workers`` > 1; module text). ``keep_images=False``: the pairs carry None instead of the
    radiograph (nothing downstream draws on it), so a process need not send its pixels back."""
    if heatmap and not screener.supports_heatmaps:
        warnings.warn(f"no heatmaps: {screener.heatmap_unavailable}", stacklevel=3)
        heatmap = False
    if batch_size < 1:
        raise OsteopanoError(f"batch size must be at least 1, got {batch_size}")
    workers = default_workers() if workers is None else max(1, int(workers))
    if processes is None:
        processes = workers > 1 and screener.measures
    stage = _Stage(portable(screener) if processes else screener, pixel_spacing_mm, spacings or {}, covariates,
                   (clinical or {}, clinical_manifest or {}), keep_images=keep_images or heatmap)
    pool = stage_pool(stage, workers) if processes else None
    chunk: list[tuple[Any, Any, Any]] = []
    for _, staged in prefetch(images, _run_stage if processes else stage, workers,
                              ahead=batch_size + 2 * workers, pool=pool):
        chunk.append(staged)
        if len(chunk) == batch_size:
            yield screener._score(chunk, heatmap)  # the network half of the screener
            chunk = []
    if chunk:
        yield screener._score(chunk, heatmap)  # the network half of the screener


class _Stage:
    """One image up to the network (``Screener._stage`` with the batch's options); picklable when the
    screener is (``portable``)."""

    def __init__(self, screener: Any, option: float | None, spacings: Mapping[Path, float],
                 covariates: Mapping[str, Any] | None, risk_inputs: tuple, keep_images: bool = True):
        self.screener, self.option, self.spacings = screener, option, spacings
        self.covariates, self.risk_inputs, self.keep_images = covariates, risk_inputs, keep_images

    def __call__(self, item: Any) -> tuple[Any, Any, Any]:
        result, image, model_input = self.screener._stage(item, self.option, self.spacings, self.covariates,
                                                          self.risk_inputs)
        return result, image if self.keep_images else None, model_input


def portable(screener: Any) -> Any:
    """A copy of ``screener`` that a process can receive: its engine replaced by a bare ``Engine``
    with the same spec, card and id (staging needs the spec, never the network)."""
    if screener.engine is None:
        return screener
    from osteopano.screen.engines import Engine

    twin = copy.copy(screener)
    twin.engine = Engine(screener.engine.spec, screener.engine.card, screener.engine.model_id)
    return twin


# The modules a staging process needs, imported once by the forkserver before it forks the workers
# (skimage.feature.corner: the foramen search loads it lazily on first use, with scipy.stats: 0.5-1 s).
_PRELOAD = ["osteopano.screen.prefetch", "osteopano.screen.screener", "osteopano.cortex.measure",
            "osteopano.prepare.gate", "osteopano.prepare.chain", "osteopano.prepare.risk", "skimage.feature.corner"]
_WORKER_STAGE: Any = None  # a staging process's _Stage, set once by _init_worker


def stage_pool(stage: _Stage, workers: int) -> ProcessPoolExecutor:
    """``workers`` staging processes, each holding ``stage`` (sent once, not with every image)."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(stage,))


def _init_worker(stage: _Stage) -> None:
    global _WORKER_STAGE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _WORKER_STAGE = stage


def _run_stage(item: Any) -> tuple[Any, Any, Any]:
    return _WORKER_STAGE(item)
