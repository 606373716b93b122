"""Inputs and output names for batch commands (``predict``, ``measure``): walking files and folders.

``iter_image_paths`` walks the inputs lazily (memory does not grow with the archive), never follows
a symbolic-link loop, and yields a missing path too, so that it becomes a row with its error.
``OutputNames`` gives each input a file name for its outputs (reports, heatmaps, overlays) that keeps
its path below the input folder AND its extension, so ``clinicA/001.dcm``, ``clinicB/001.png``,
``007.dcm`` and ``007.png`` never share a name; a name already taken in this run, or by a file on
disk, gets a ``-2``, ``-3`` ... suffix: nothing is overwritten.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from osteopano.io.images import IMAGE_SUFFIXES

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def iter_image_paths(inputs: Iterable[str | Path], exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Files given directly (whatever their name), then images under each folder (recursive, sorted per
    folder, hidden files and folders skipped, ``exclude`` folders skipped). Lazy; no duplicates."""
    skip = [Path(e).resolve() for e in exclude]
    seen: set[Path] = set()
    for item in inputs:
        item = Path(item)
        candidates = _walk(item, skip, set()) if item.is_dir() else iter([item])
        for path in candidates:
            try:
                key = path.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                key = path.absolute()
            if key not in seen:
                seen.add(key)
                yield path.absolute()


def _walk(root: Path, skip: list[Path], visited: set[Path]) -> Iterator[Path]:
    """Images under ``root``, depth first, names sorted within each folder (os.scandir, lazy)."""
    try:
        real = root.resolve()
    except (OSError, RuntimeError):
        return
    if real in visited:  # a folder reached again through a link: a loop
        return
    visited.add(real)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:
            continue
        if is_dir:
            try:
                skipped = any(path.resolve().is_relative_to(s) for s in skip)
            except (OSError, RuntimeError):
                continue
            if not skipped:
                yield from _walk(path, skip, visited)
        elif is_file and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def relative_name(path: Path, roots: Iterable[Path]) -> str:
    """``path`` below the input folder holding it, with its extension, as one safe file-name part:
    ``clinicA/001.dcm`` -> ``clinicA__001.dcm``; a file given directly keeps its own name."""
    resolved = Path(path).absolute()
    parts: tuple[str, ...] = (resolved.name,)
    for root in roots:
        root = Path(root).absolute()
        if root.is_dir() and resolved.is_relative_to(root):
            parts = resolved.relative_to(root).parts
            break
    return "__".join(_UNSAFE.sub("_", p) for p in parts) or "image"


# the suffixes outputs are written with (reports, heatmaps, overlays, DICOM and FHIR results)
OUTPUT_SUFFIXES = (".html", ".pdf", "_gradcam.png", "_cortex.png", "_sr.dcm", "_sc.dcm", "_fhir.json")


class OutputNames:
    """Unique output stems for one run: ``stem(path)`` is ``relative_name`` with ``.`` -> ``_`` (so the
    extension survives), made unique against earlier stems of this run and against outputs already in
    ``folders`` (read once, at the start)."""

    def __init__(self, roots: Iterable[Path], folders: Iterable[Path | None] = ()):
        self.roots = [Path(r) for r in roots]
        self.taken: set[str] = set()
        self.by_path: dict[str, str] = {}
        for folder in folders:
            if folder is None or not Path(folder).is_dir():
                continue
            for entry in os.scandir(folder):
                for suffix in OUTPUT_SUFFIXES:
                    if entry.name.endswith(suffix):
                        self.taken.add(entry.name[: -len(suffix)])

    def stem(self, path: Path) -> str:
        key = str(path)
        if key in self.by_path:
            return self.by_path[key]
        base = relative_name(path, self.roots).replace(".", "_")
        stem, k = base, 1
        while stem in self.taken:
            k += 1
            stem = f"{base}-{k}"
        self.taken.add(stem)
        self.by_path[key] = stem
        return stem
