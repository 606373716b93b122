"""Decoding and preparing a data set's images once for training or evaluation, in threads.

Every image goes through the one preparation chain (``osteopano.prepare.chain.planes``): the uint8
network planes are kept (one per image for whole-image models, two cortex crops for ROI models) and
augmented and normalised per batch. ROI planes are memoised in this process (file, size, mtime,
spacing, recipe), so resuming, evaluating or training a second ROI model on the same images in one
process does not measure them again.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from osteopano.data.dataset import Sample
from osteopano.errors import OsteopanoError
from osteopano.io.images import read_image
from osteopano.prepare.chain import planes
from osteopano.prepare.spacing import resolve_spacing
from osteopano.prepare.spec import ModelSpec



def _map_images(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, console: Console | None,
                label: str) -> tuple[list[Any], list[int], list[str]]:
    """Run ``fn`` over ``items`` in threads with a progress bar; ``fn`` returns a result or a str reason.
    Returns (all results, indices of the good ones, the reasons of the bad ones)."""
    results: list[Any] = []
    with ThreadPoolExecutor(max(1, workers)) as pool, _progress(console) as progress:
        task = progress.add_task(label, total=len(items), info="")
        for res in pool.map(fn, items):
            results.append(res)
            progress.advance(task)
    good = [i for i, r in enumerate(results) if not isinstance(r, str)]
    return results, good, [r for r in results if isinstance(r, str)]


def load_planes(samples: Sequence[Sample], spec: ModelSpec, pixel_spacing_mm: float | None, workers: int,
                console: Console | None = None) -> tuple[np.ndarray, list[int], list[str], np.ndarray | None]:
    """Decode and prepare every sample in threads: (planes (N, K, S, S) uint8 of the good samples, their
    indices, 'path: reason' for each image left out, the measured mean MCW in mm of the good ones (ROI
    models; None for whole-image ones)). Left out: unreadable files, and for ROI models images without a
    pixel spacing or whose cortex is not located. Spacing: ``osteopano.prepare.spacing``."""
    roi = spec.input_mode == "roi"
    recipe = json.dumps(spec.to_dict(), sort_keys=True)

    def one(sample: Sample) -> tuple[np.ndarray, float] | str:
        try:
            if not roi:
                return planes(read_image(sample.path), spec)[0], np.nan
            stat = sample.path.stat()
            spacing = resolve_spacing(pixel_spacing_mm, sample.number("pixel_spacing_mm"), None,
                                      name=str(sample.path)).mm
            return _roi_planes(str(sample.path), stat.st_size, stat.st_mtime_ns, spacing, recipe)
        except OsteopanoError as exc:
            return str(exc)
        except (ValueError, OSError) as exc:
            return f"{sample.path}: {exc}"

    label = "Measuring the cortex, cutting ROI crops" if roi else "Preprocessing images"
    results, good, bad = _map_images(one, samples, workers, console, label)
    size, k = spec.preprocess.size, (2 if roi else 1)
    images = np.stack([results[i][0] for i in good]) if good else np.zeros((0, k, size, size), np.uint8)
    mcw = np.asarray([results[i][1] for i in good], float) if roi else None
    return images, good, bad, mcw


@functools.lru_cache(maxsize=1024)  # ~100 MB of 224 px planes at most
def _roi_planes(path: str, _size: int, _mtime_ns: int, spacing: float | None, recipe: str
                ) -> tuple[np.ndarray, float]:
    """One image's ROI planes (2, S, S) uint8 and measured MCW (mm, NaN when unknown); see load_planes.
    ``spacing`` is the explicit or manifest value when there is one (``osteopano.prepare.spacing``)."""
    image = read_image(path)
    spacing = resolve_spacing(spacing, None, image.pixel_spacing_mm).mm
    out, _, measurement = planes(image, ModelSpec.from_dict(json.loads(recipe)), spacing)
    out.setflags(write=False)
    return out, float(measurement.mcw_mm) if measurement.mcw_mm is not None else np.nan


def _progress(console: Console | None) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), console=console, transient=True,
                    disable=console is None or not console.is_terminal)


