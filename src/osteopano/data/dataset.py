"""Find the images of a data set and check them before training.

Three layouts are accepted (``discover``):

* a folder with one subfolder per class (any class names, like Keras'
  ``image_dataset_from_directory``); images are found recursively inside each class folder, and
  images lying directly in the folder are kept without a label;
* a CSV manifest with at least ``path`` and ``label`` columns (paths relative to the manifest's
  folder), optionally the other ``MANIFEST_COLUMNS`` and any extra columns;
* a folder holding ``manifest.csv``, which is then used.

Hidden files and folders (name starting with '.') are ignored. ``inspect_dataset`` reads every
image and reports counts, sizes, unreadable files, exact duplicates and patients whose images
carry different labels - the report behind ``osteopano inspect``.

``discover`` also refuses (``DataError``, one line) a data set that would train wrongly
(``find_problems``): manifest paths outside the data folder, a file listed on several rows,
byte-identical images with different labels, in different manifest splits, or - without a split
column - under different patient IDs (the random split could put them on both sides of the
train/test line). ``allow_duplicates=True`` (``--allow-duplicates``) records them in
``Dataset.problems`` instead. A filled numeric column (age, tscore, mcw_*_mm) that is not a number
is always refused, naming the line: leave the cell empty when the value is unknown.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osteopano.errors import DataError, ImageReadError
from osteopano.io.images import IMAGE_SUFFIXES, read_image

MANIFEST_COLUMNS = (
    "path",
    "label",
    "patient_id",
    "age",
    "sex",
    "weight_kg",
    "tscore",
    "klemetti",
    "mcw_left_mm",
    "mcw_right_mm",
    "pixel_spacing_mm",
    "split",
)
REQUIRED_COLUMNS = ("path", "label")
NUMERIC_COLUMNS = ("age", "weight_kg", "tscore", "mcw_left_mm", "mcw_right_mm")  # must be numbers when filled
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "dataset.json"  # optional sidecar describing the data set's provenance


@dataclass
class Sample:
    """One image of a data set and the manifest row (or folder name) that describes it."""

    path: Path  # absolute
    label: str | None  # value of the 'label' column / class-folder name
    patient_id: str  # from the manifest; default = file stem (DICOM PatientID is not read here)
    fields: dict[str, str] = field(default_factory=dict)  # every column as text, '' when empty

    def get(self, column: str) -> str | None:
        """The column's text, or None when it is empty or missing."""
        value = self.fields.get(column, "")
        return value if value.strip() else None

    def number(self, column: str) -> float | None:
        """The column as a float, None when empty; DataError when it is not a number."""
        value = self.get(column)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{self.path}: column '{column}' is not a number: {value!r}") from None


@dataclass
class Dataset:
    """The samples found under ``root`` and how they were found."""

    root: Path
    kind: str  # 'folder' | 'manifest'
    samples: list[Sample]
    manifest: Path | None = None
    skipped: list[Path] = field(default_factory=list)  # files that are not images by extension
    info: dict = field(default_factory=dict)  # the optional dataset.json sidecar (e.g. {"synthetic": true})
    problems: list[dict[str, Any]] = field(default_factory=list)  # find_problems, kept with allow_duplicates
    lines: list[int] = field(default_factory=list)  # manifest line of each sample (manifests only)

    @property
    def synthetic(self) -> bool | None:
        """True for data made by ``osteopano synth``; None when the provenance is not recorded."""
        value = self.info.get("synthetic")
        return bool(value) if value is not None else None

    def labels(self, column: str = "label") -> list[str | None]:
        """Each sample's value of ``column`` (the label by default), None where empty."""
        if column == "label":
            return [s.label for s in self.samples]
        return [s.get(column) for s in self.samples]

    def fingerprint(self) -> str:
        """sha256 of the manifest bytes, or of the sorted relative file list with sizes."""
        digest = hashlib.sha256()
        if self.manifest is not None:
            digest.update(self.manifest.read_bytes())
            return digest.hexdigest()
        for rel, size in sorted(
            (_relative(s.path, self.root), s.path.stat().st_size if s.path.exists() else -1)
            for s in self.samples
        ):
            digest.update(f"{rel}\t{size}\n".encode())
        return digest.hexdigest()


def discover(data: str | Path, *, allow_duplicates: bool = False, check: bool = True) -> Dataset:
    """Find the samples of a class-folder tree, a CSV manifest, or a folder holding manifest.csv.

    With ``check`` (default) ``find_problems`` runs (it hashes every file) and any problem is a
    ``DataError`` unless ``allow_duplicates``, which keeps them in ``Dataset.problems``.
    """
    data = Path(data).expanduser()
    if not data.exists():
        raise DataError(f"{data}: no such file or folder")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DataError(f"{data}: not a folder or a CSV manifest")
        ds = _from_manifest(data)
    elif (data / MANIFEST_NAME).is_file():
        ds = _from_manifest(data / MANIFEST_NAME)
    else:
        ds = _from_folder(data)
    ds.info = _read_info(ds.manifest.parent if ds.manifest is not None else ds.root)
    if check:
        ds.problems = find_problems(ds)
        if ds.problems and not allow_duplicates:
            raise DataError(problems_message(ds))
    return ds


def problems_message(ds: Dataset) -> str:
    """One line: where, how many problems, the first two, and how to go on."""
    source = ds.manifest or ds.root
    shown = "; ".join(p["message"] for p in ds.problems[:2])
    more = f" (and {len(ds.problems) - 2} more)" if len(ds.problems) > 2 else ""
    return (f"{source}: {len(ds.problems)} data problem(s): {shown}{more}; fix the data, or pass "
            "--allow-duplicates to record them and go on")


def find_problems(ds: Dataset) -> list[dict[str, Any]]:
    """What would make training on ``ds`` wrong; each {'kind', 'message', 'paths'}.

    Kinds: ``outside`` (a path outside the data folder), ``repeated_row`` / ``conflicting_rows``
    (one file on several rows, with identical / different values), and for byte-identical files
    ``conflicting_labels``, ``duplicate_across_splits`` (manifest split column) or
    ``duplicate_other_patient`` (no split column: a random split may separate them).
    """
    problems: list[dict[str, Any]] = []
    rel = [_relative(s.path, ds.root) for s in ds.samples]
    root = ds.root.resolve()
    for sample, name in zip(ds.samples, rel):
        target = sample.path.resolve()
        if not target.is_relative_to(root):
            problems.append({"kind": "outside", "paths": [name],
                             "message": f"{name} is outside the data folder {root}"})
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, sample in enumerate(ds.samples):
        by_path[sample.path.resolve()].append(i)
    for indices in by_path.values():
        if len(indices) < 2:
            continue
        where = _where(ds, indices)
        differing = sorted({k for i in indices for k, v in ds.samples[i].fields.items()
                            if any(ds.samples[j].fields.get(k, "") != v for j in indices)})
        if differing:
            problems.append({"kind": "conflicting_rows", "paths": [rel[indices[0]]],
                             "message": f"{rel[indices[0]]} is listed {where} with different "
                             f"{', '.join(differing)}"})
        else:
            problems.append({"kind": "repeated_row", "paths": [rel[indices[0]]],
                             "message": f"{rel[indices[0]]} is listed twice or more ({where})"})
    has_split = any(s.get("split") for s in ds.samples)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i in sorted(min(indices) for indices in by_path.values()):
        if ds.samples[i].path.is_file():
            try:
                by_hash[_sha256(ds.samples[i].path)].append(i)
            except OSError:
                continue
    for indices in by_hash.values():
        if len(indices) < 2:
            continue
        names = [rel[i] for i in indices]
        group = [ds.samples[i] for i in indices]
        labels = sorted({s.label for s in group if s.label is not None})
        splits = sorted({s.get("split") or "" for s in group})
        patients = sorted({s.patient_id for s in group})
        same = f"{' and '.join(names[:3])}{' ...' if len(names) > 3 else ''} are the same image"
        if len(labels) > 1:
            problems.append({"kind": "conflicting_labels", "paths": names,
                             "message": f"{same} with different labels ({', '.join(labels)})"})
        elif has_split and len(splits) > 1:
            problems.append({"kind": "duplicate_across_splits", "paths": names,
                             "message": f"{same} in different splits ({', '.join(splits)}): leakage"})
        elif not has_split and len(patients) > 1:
            problems.append({"kind": "duplicate_other_patient", "paths": names,
                             "message": f"{same} under different patient IDs ({len(patients)}), so a "
                             "split can put them in both train and test"})
    return problems


def _where(ds: Dataset, indices: list[int]) -> str:
    if ds.lines:
        return "on lines " + ", ".join(str(ds.lines[i]) for i in indices)
    return f"{len(indices)} times"


def _read_info(folder: Path) -> dict:
    """The data set's ``dataset.json`` sidecar (written by ``osteopano synth``), or {}."""
    path = folder / INFO_NAME
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object")
    return info


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _from_folder(root: Path) -> Dataset:
    root = root.resolve()
    samples: list[Sample] = []
    skipped: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p, root)):
        if path.parent == root and path.name == INFO_NAME:
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(path)
            continue
        rel = path.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        fields = {"path": rel.as_posix(), "label": label or "", "patient_id": path.stem}
        samples.append(Sample(path=path, label=label, patient_id=path.stem, fields=fields))
    if not samples:
        raise DataError(f"{root}: no images found")
    return Dataset(root=root, kind="folder", samples=samples, skipped=skipped)


def _from_manifest(manifest: Path) -> Dataset:
    manifest = manifest.resolve()
    root = manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DataError(
                    f"{manifest}: missing required column(s) {', '.join(missing)} "
                    f"(found: {', '.join(columns) or 'none'})"
                )
            reader.fieldnames = columns
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: cannot read the manifest: {exc}") from exc
    samples: list[Sample] = []
    lines: list[int] = []
    for line, row in enumerate(rows, start=2):
        fields = {k: (v or "").strip() if isinstance(v, str) else "" for k, v in row.items() if k is not None}
        if not fields["path"]:
            raise DataError(f"{manifest} line {line}: empty path")
        for column in NUMERIC_COLUMNS:
            value = fields.get(column, "")
            if value and not _is_number(value):
                raise DataError(f"{manifest} line {line}: column '{column}' is not a number: {value!r} "
                                "(leave it empty when unknown)")
        lines.append(line)
        path = Path(fields["path"]).expanduser()
        path = path if path.is_absolute() else root / path
        samples.append(
            Sample(
                path=path,
                label=fields["label"] or None,
                patient_id=fields.get("patient_id") or path.stem,
                fields=fields,
            )
        )
    if not samples:
        raise DataError(f"{manifest}: no images found")
    return Dataset(root=root, kind="manifest", samples=samples, manifest=manifest, lines=lines)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_spacing(sample: Sample) -> float | None:
    """The manifest's pixel_spacing_mm; a non-number counts as absent (the image may know it)."""
    try:
        return sample.number("pixel_spacing_mm")
    except DataError:
        return None


def _range(values: list[float]) -> dict[str, float] | None:
    return {"min": min(values), "max": max(values)} if values else None


def inspect_dataset(
    ds: Dataset, *, read_images: bool = True, progress: bool = False, gate: Any = None
) -> dict[str, Any]:
    """Check every sample and return the JSON-ready report behind ``osteopano inspect``.

    ``read_images`` fully decodes every file (so a truncated PNG is caught); without it only
    existence and file hashes are checked. ``gate`` (a checker such as
    ``osteopano.prepare.gate.check_radiograph``) runs on each decoded image: a refused one is listed in ``unreadable``
    with the gate's reason (and ``"gate": true``) and is not usable. ``progress`` shows a Rich
    progress bar (console use).
    """
    widths: list[int] = []
    heights: list[int] = []
    spacings: list[float] = []
    bit_depths: Counter[int] = Counter()
    formats: Counter[str] = Counter()
    unreadable: list[dict[str, str]] = []
    by_hash: dict[str, list[str]] = defaultdict(list)
    usable: list[Sample] = []

    def check(sample: Sample) -> None:
        rel = _relative(sample.path, ds.root)
        try:
            if not sample.path.is_file():
                raise ImageReadError(sample.path, "file not found")
            by_hash[_sha256(sample.path)].append(rel)
            if read_images:
                image = read_image(sample.path)
                if gate is not None:
                    verdict = gate(image)
                    if not verdict.passed:
                        unreadable.append({"path": rel, "reason": str(verdict.reason), "gate": True})
                        return
                heights.append(image.pixels.shape[0])
                widths.append(image.pixels.shape[1])
                bit_depths[image.bit_depth] += 1
                formats[image.source_format] += 1
                spacing = _manifest_spacing(sample) or image.pixel_spacing_mm
            else:
                spacing = _manifest_spacing(sample)
        except (ImageReadError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ImageReadError) else str(exc)
            unreadable.append({"path": rel, "reason": reason})
            return
        if spacing is not None:
            spacings.append(spacing)
        usable.append(sample)

    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            for sample in bar.track(ds.samples, description="Checking images"):
                check(sample)
    else:
        for sample in ds.samples:
            check(sample)

    per_patient: dict[str, list[Sample]] = defaultdict(list)
    for sample in ds.samples:
        per_patient[sample.patient_id].append(sample)
    mixed = [
        {"patient_id": pid, "labels": sorted({s.label for s in group if s.label is not None})}
        for pid, group in sorted(per_patient.items())
        if len({s.label for s in group if s.label is not None}) > 1
    ]
    classes = Counter(s.label for s in ds.samples if s.label is not None)
    usable_classes = Counter(s.label for s in usable if s.label is not None)
    return {
        "root": str(ds.root),
        "kind": ds.kind,
        "manifest": str(ds.manifest) if ds.manifest else None,
        "fingerprint": ds.fingerprint(),
        "synthetic": ds.synthetic,
        "n_images": len(ds.samples),
        "classes": dict(sorted(classes.items())),
        "usable_classes": dict(sorted(usable_classes.items())),
        "unlabelled": sum(1 for s in ds.samples if s.label is None),
        "n_patients": len(per_patient),
        "patients_with_multiple_images": sum(1 for g in per_patient.values() if len(g) > 1),
        "width": _range(widths),
        "height": _range(heights),
        "pixel_spacing_mm": _range(spacings),
        "n_with_spacing": len(spacings),
        "bit_depths": {str(k): v for k, v in sorted(bit_depths.items())},
        "formats": dict(sorted(formats.items())),
        "unreadable": unreadable,
        "duplicates": sorted(sorted(g) for g in by_hash.values() if len(g) > 1),
        "problems": ds.problems,
        "mixed_label_patients": mixed,
        "skipped_files": [_relative(p, ds.root) for p in ds.skipped],
        "usable": len(usable),
        "usable_labelled": sum(usable_classes.values()),
        "images_read": read_images,
    }
