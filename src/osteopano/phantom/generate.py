"""Synthetic panoramic radiographs (OPG) with known ground truth - the project's test bed.

No labelled real data exists here, so every test, benchmark and demo runs on this phantom.
Results on it are synthetic and never clinical evidence. docs/phantom.md describes the model.

The phantom is assembled from small modules: :mod:`.latent` (patient truth and the Klemetti
grader), :mod:`.anatomy` (jaw shape), :mod:`.mandible` (bone, cortex, Klemetti signs),
:mod:`.teeth` (dentition and metal), :mod:`.distractors` (everything else on an OPG, each with
its own switch and frequency) and :mod:`.acquisition` (pose, exposure, detector, burned-in
marks). This module renders images and writes data sets.

Randomness: ``np.random.SeedSequence(seed)`` has one child per patient (truth, anatomy, grader)
and per image (positioning, acquisition, noise), so the same seed gives byte-identical files
whatever the worker count.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from osteopano import __version__
from osteopano.errors import OsteopanoError
from osteopano.io.files import atomic_write_json, atomic_write_text
from osteopano.phantom.acquisition import (
    ACQ_KEYS,
    burn_in,
    detector,
    expose,
    field_matrices,
    sample_acquisition,
)
from osteopano.phantom.anatomy import Anatomy, sample_anatomy
from osteopano.phantom.distractors import (
    ANATOMY_KINDS,
    DENTAL_KINDS,
    IMAGE_KINDS,
    Distractors,
    anatomy_layer,
    describe,  # fmt: skip
)
from osteopano.phantom.latent import KLEMETTI_CUTS, GraderModel, Patient, sample_patient  # noqa: F401 (re-export)
from osteopano.phantom.mandible import draw_mandible
from osteopano.phantom.raster import Raster, child, smoothstep
from osteopano.phantom.teeth import sample_dentition, teeth_layer

ASPECT = 0.4875  # height / width of the output image (1600 -> 780)
TWO_IMAGE_FRACTION = 0.18  # share of patients imaged twice
FORMATS = ("png", "dicom", "jpeg")
SUFFIX = {"png": "png", "dicom": "dcm", "jpeg": "jpg"}
JPEG_QUALITY = 88
BORDER_STEP_MM = 2.0  # spacing of the border_px polyline in the manifest

BASE_COLUMNS = (
    "path", "patient_id", "age", "sex", "tscore", "label", "klemetti", "mcw_left_mm",
    "mcw_right_mm", "pixel_spacing_mm", "site_left_x", "site_left_y", "site_right_x",
    "site_right_y", "normal_left_x", "normal_left_y", "normal_right_x", "normal_right_y",
)  # fmt: skip
TRUTH_COLUMNS = (
    "klemetti_true", "erosion_grade", "klemetti_grader", "foramen_left_x", "foramen_left_y",
    "foramen_right_x", "foramen_right_y", "dentition", "teeth_count", "metal_count", "burned_in",
    "distractors", "border_px", "cortex_visibility", "site_left_visible", "site_right_visible",
    "midline_x", "midline_y",
)  # fmt: skip
MANIFEST_COLUMNS = BASE_COLUMNS + TRUTH_COLUMNS + tuple(f"acq_{k}" for k in ACQ_KEYS)


@dataclass
class PhantomImage:
    """One rendered phantom: pixels, pixel spacing, truth row (manifest fields) and masks."""

    pixels: np.ndarray  # uint16 (H, W)
    pixel_spacing_mm: float
    truth: dict[str, Any]
    mandible_mask: np.ndarray  # uint8 0/255
    cortex_mask: np.ndarray  # uint8 0/255
    teeth_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))  # uint8 0/255
    metal_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))  # uint8 0/255
    border_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (N, 2) inferior border, 0.5 mm steps
    extra: dict[str, Any] = field(default_factory=dict)  # the JSON sidecar's content (see docs/phantom.md)


@dataclass
class _Scene:
    att: np.ndarray
    layers: dict[str, np.ndarray]  # mandible, cortex, teeth, metal coverage (raster grid)
    anat: Anatomy
    raster: Raster
    present: dict[str, bool]
    dentition: Any


def _posture(present: dict[str, bool], rng: np.random.Generator) -> float:
    u = rng.uniform(0.45, 1.0)
    small = rng.uniform(-0.15, 0.15)
    return u if present.get("smile") else -u if present.get("frown") else small


def render_scene(patient: Patient, width: int, distractors: Distractors, image_present: dict[str, bool],
                 image_seq: np.random.SeedSequence) -> _Scene:  # fmt: skip
    """Everything in anatomy mm on the raster: attenuation plus coverage layers."""
    raster = Raster.for_width(width)
    seq = patient.anatomy_seed
    rng = np.random.default_rng(child(seq, 0))
    present = distractors.draw(child(seq, 1), ANATOMY_KINDS + DENTAL_KINDS)
    posture = _posture(image_present, np.random.default_rng(child(image_seq, 0)))
    anat = sample_anatomy(rng, patient.scale, posture)
    dent = sample_dentition(np.random.default_rng(child(seq, 4)), patient.age, present)
    anat.ridge_drop = dent.ridge_drop
    att = anatomy_layer(raster, anat, present, child(seq, 2))
    mand, cortex = draw_mandible(att, raster, anat, patient, rng)
    teeth, cover, metal = teeth_layer(raster, anat, dent, np.random.default_rng(child(seq, 3)))
    att += teeth
    att = cv2.GaussianBlur(att, (0, 0), 0.25)  # the foramen polygon etc. are not pixel-sharp
    if image_present.get("incisor_blur"):  # incisors out of the focal trough: smeared sideways
        r = np.random.default_rng(child(image_seq, 1))
        sig = r.uniform(1.0, 3.0) / raster.mm
        blurred = cv2.GaussianBlur(att, (0, 0), sigmaX=sig, sigmaY=0.3 * sig)
        wgt = smoothstep((22 * anat.k - np.abs(raster.xs)) / 6)[None, :]
        wgt = wgt * smoothstep((anat.chin_y - 4 - raster.ys) / 3)[:, None]
        att = att + wgt * (blurred - att)
    present = {**present, **image_present}
    return _Scene(att, {"mandible": mand, "cortex": cortex, "teeth": cover, "metal": metal}, anat, raster,
                  present, dent)  # fmt: skip


def _seq(rng_or_seed: np.random.Generator | np.random.SeedSequence | int) -> np.random.SeedSequence:
    if isinstance(rng_or_seed, np.random.Generator):
        return np.random.SeedSequence(int(rng_or_seed.integers(0, 2**63)))
    if isinstance(rng_or_seed, np.random.SeedSequence):
        return rng_or_seed
    return np.random.SeedSequence(int(rng_or_seed))


def render(
    rng_or_seed: np.random.Generator | np.random.SeedSequence | int,
    *,
    width: int = 1600,
    patient: Patient | None = None,
    acquisition: dict[str, float] | None = None,
    patient_id: str = "P0000",
    distractors: Distractors | None = None,
    grader: GraderModel | None = None,
) -> PhantomImage:
    """Render one phantom radiograph in memory.

    ``rng_or_seed`` seeds whatever is not given: the patient (latent truth and anatomy) and the
    acquisition. Passing the same ``patient`` with another seed gives a second image of the
    same anatomy and truth. ``distractors`` defaults to :class:`Distractors` ().
    """
    if width < 200:
        raise OsteopanoError(f"--width must be at least 200 px, got {width}")
    distractors = distractors if distractors is not None else Distractors()
    seq = _seq(rng_or_seed)
    patient_seq, acq_seq, noise_seq = (child(seq, i) for i in range(3))
    if patient is None:
        patient = sample_patient(patient_seq, patient_id, grader)
    image_present = distractors.draw(child(seq, 3), IMAGE_KINDS)
    if acquisition is None:
        acquisition = sample_acquisition(np.random.default_rng(acq_seq), image_present)
    height = int(round(width * ASPECT))
    scene = render_scene(patient, width, distractors, image_present, child(seq, 4))
    anat = scene.anat
    mat, to_pixel, rot, spacing = field_matrices(scene.raster, acquisition, width, height)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    att = cv2.warpAffine(scene.att, mat, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    masks = {k: cv2.warpAffine(v, mat, (width, height), flags=flags) > 0.5 for k, v in scene.layers.items()}

    metal = masks["metal"].astype(np.float32)
    img, frame_cover = expose(att, metal, acquisition, np.random.default_rng(child(seq, 5)))
    img = detector(img, metal, acquisition, np.random.default_rng(noise_seq))
    img, written = burn_in(img, image_present, np.random.default_rng(child(seq, 6)))
    pixels = np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)

    truth: dict[str, Any] = {
        "patient_id": patient.patient_id, "age": patient.age, "sex": patient.sex,
        "tscore": patient.tscore, "label": patient.label, "klemetti": patient.klemetti,
        "mcw_left_mm": patient.mcw_left_mm, "mcw_right_mm": patient.mcw_right_mm,
        "pixel_spacing_mm": round(spacing, 6),
    }  # fmt: skip
    extra: dict[str, Any] = {}
    for name, side in (("left", 1), ("right", -1)):  # patient's right = image left (x < 0)
        p, n = anat.site(side)
        px, nn, fo = to_pixel(p), rot @ n, to_pixel(anat.foramen(side))
        truth[f"site_{name}_x"], truth[f"site_{name}_y"] = round(float(px[0]), 3), round(float(px[1]), 3)
        truth[f"normal_{name}_x"], truth[f"normal_{name}_y"] = round(float(nn[0]), 5), round(float(nn[1]), 5)
        extra[f"foramen_{name}"] = [round(float(fo[0]), 2), round(float(fo[1]), 2)]
        mcw = patient.mcw_left_mm if name == "left" else patient.mcw_right_mm
        cortex = to_pixel(p + np.linspace(-1.0, mcw + 1.0, 16)[:, None] * n)  # 1 mm either side of it
        truth[f"site_{name}_visible"] = int(_in_picture(frame_cover, cortex))
    # the face's midline (anatomy x = 0) at the mean height of the two sites, in pixels
    mid_px = to_pixel(np.array([0.0, 0.5 * (anat.site(-1)[0][1] + anat.site(1)[0][1])]))
    truth["midline_x"], truth["midline_y"] = round(float(mid_px[0]), 3), round(float(mid_px[1]), 3)
    border = to_pixel(anat.border_polyline(0.5))
    coarse = to_pixel(anat.border_polyline(BORDER_STEP_MM))
    truth.update({
        "klemetti_true": patient.klemetti_true, "erosion_grade": round(patient.erosion, 3),
        "klemetti_grader": f"G{patient.grader + 1}",
        "foramen_left_x": extra["foramen_left"][0], "foramen_left_y": extra["foramen_left"][1],
        "foramen_right_x": extra["foramen_right"][0], "foramen_right_y": extra["foramen_right"][1],
        "dentition": scene.dentition.kind, "teeth_count": scene.dentition.count(),
        "metal_count": scene.dentition.metal_count(), "burned_in": written,
        "distractors": describe(scene.present), "border_px": encode_polyline(coarse),
        "cortex_visibility": patient.cortex_visibility,
    })  # fmt: skip
    for key in ACQ_KEYS:
        truth[f"acq_{key}"] = round(float(acquisition.get(key, 0.0)), 5)
    extra.update({
        "border_px": np.round(border, 2).tolist(),
        "site_left": [truth["site_left_x"], truth["site_left_y"]],
        "site_right": [truth["site_right_x"], truth["site_right_y"]],
        "teeth": {f"{'lower' if j > 0 else 'upper'}_{'left' if s > 0 else 'right'}_{i + 1}": v
                  for (j, s, i), v in scene.dentition.teeth.items()},
        "metal": {f"{'lower' if j > 0 else 'upper'}_{'left' if s > 0 else 'right'}_{i + 1}": sorted(v)
                  for (j, s, i), v in scene.dentition.metal.items() if v},
    })  # fmt: skip
    u8 = lambda m: (m * 255).astype(np.uint8)
    return PhantomImage(
        pixels=pixels,
        pixel_spacing_mm=spacing,
        truth=truth,
        mandible_mask=u8(masks["mandible"]),
        cortex_mask=u8(masks["cortex"] & masks["mandible"]),
        teeth_mask=u8(masks["teeth"]),
        metal_mask=u8(masks["metal"]),
        border_px=border,
        extra=extra,
    )


def _in_picture(frame_cover: np.ndarray, points: np.ndarray) -> bool:
    """Are all these (N, 2) pixel points inside the image and not under the collimation frame (cover
    < 0.5)? A site whose cortex (with 1 mm either side) fails this cannot be measured on the image."""
    h, w = frame_cover.shape
    c, r = np.rint(points).astype(int).T
    inside = (c >= 0) & (c < w) & (r >= 0) & (r < h)
    return bool(inside.all() and (frame_cover[r, c] < 0.5).all())


def encode_polyline(pts: np.ndarray) -> str:
    """Compact text of a pixel polyline: ``x,y;x,y;...`` with one decimal."""
    return ";".join(f"{x:.1f},{y:.1f}" for x, y in np.asarray(pts))


def decode_polyline(text: str) -> np.ndarray:
    """Inverse of :func:`encode_polyline`: an (N, 2) float array."""
    if not text:
        return np.zeros((0, 2))
    return np.array([[float(v) for v in p.split(",")] for p in text.split(";")])


# ----------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class _Job:
    stem: str
    patient_index: int
    image_seq: np.random.SeedSequence
    patient_seq: np.random.SeedSequence


def plan(n: int, seed: int) -> list[_Job]:
    """Assign n images to patients (~18 % of patients imaged twice) with their seeds."""
    root = np.random.SeedSequence(seed)
    plan_seq, patients_seq = child(root, 0), child(root, 1)
    rng = np.random.default_rng(plan_seq)
    jobs: list[_Job] = []
    pi = 0
    while len(jobs) < n:
        pseq = child(patients_seq, pi)
        shots = 2 if (rng.random() < TWO_IMAGE_FRACTION and n - len(jobs) >= 2) else 1
        for shot in range(shots):
            iseq = child(pseq, 1000 + shot)
            jobs.append(_Job(f"phantom_{len(jobs):05d}", pi, iseq, pseq))
        pi += 1
    return jobs


@dataclass(frozen=True)
class _Task:
    job: _Job
    out_dir: str
    width: int
    fmt: str
    masks: bool
    seed: int
    distractors: Distractors
    grader: GraderModel


def _write_one(task: _Task) -> dict[str, Any]:
    """Render and write one image (and masks); returns its manifest row. Runs in a worker."""
    job, out = task.job, Path(task.out_dir)
    patient = sample_patient(job.patient_seq, f"P{job.patient_index:05d}", task.grader)
    ph = render(job.image_seq, width=task.width, patient=patient, distractors=task.distractors)
    name = f"{job.stem}.{SUFFIX[task.fmt]}"
    from osteopano.io.files import atomic_path

    if task.fmt == "png":
        from osteopano.io.images import write_png16

        write_png16(out / name, ph.pixels)
    elif task.fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", (ph.pixels >> 8).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OsteopanoError(f"{out / name}: JPEG encoding failed")
        with atomic_path(out / name) as tmp:
            Path(tmp).write_bytes(buf.tobytes())
    else:
        _write_dicom(out / name, ph, task.seed, job.stem)
    if task.masks:
        for kind in ("mandible", "cortex", "teeth", "metal"):
            with atomic_path(out / "masks" / f"{job.stem}_{kind}.png") as tmp:
                cv2.imwrite(str(tmp), getattr(ph, f"{kind}_mask"), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        atomic_write_json(out / "masks" / f"{job.stem}_truth.json", {"path": name, **ph.extra})
    return {"path": name, **ph.truth}


def _write_dicom(path: Path, ph: PhantomImage, seed: int, stem: str) -> None:
    """Write a DICOM whose UIDs derive from the seed and file stem, so the same seed gives identical bytes."""
    from osteopano.io.images import write_dicom

    write_dicom(path, ph.pixels, ph.truth["pixel_spacing_mm"], patient_id=ph.truth["patient_id"],
                uid_seed=f"osteopano-phantom-{seed}-{stem}",
                BurnedInAnnotation="YES" if ph.truth.get("burned_in") else "NO")  # fmt: skip


def generate(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    fmt: str = "png",
    width: int = 1600,
    masks: bool = False,
    progress: bool = True,
    workers: int = 2,
    on_image: Callable[[], None] | None = None,
    distractors: Distractors | None = None,
    grader: GraderModel | None = None,
) -> list[dict[str, Any]]:
    """Write n phantom radiographs and ``out_dir/manifest.csv``; return the manifest rows.

    Output is byte-identical for the same arguments whatever ``workers`` is.
    """
    if n < 1:
        raise OsteopanoError(f"--n must be at least 1, got {n}")
    if fmt not in FORMATS:
        raise OsteopanoError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if width < 200:
        raise OsteopanoError(f"--width must be at least 200 px, got {width}")
    distractors = distractors if distractors is not None else Distractors()
    grader = grader if grader is not None else GraderModel()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OsteopanoError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    tasks = [_Task(job, str(out), width, fmt, masks, seed, distractors, grader) for job in plan(n, seed)]
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task("synthesising", total=n)
    try:
        with contextlib.ExitStack() as stack:
            mapper = map
            if workers > 1 and n > 1:
                mapper = stack.enter_context(ProcessPoolExecutor(max_workers=workers)).map
            for row in mapper(_write_one, tasks):
                rows.append(row)
                if bar is not None:
                    bar.advance(task_id)
                if on_image:
                    on_image()
    finally:
        if bar is not None:
            bar.stop()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())
    # Provenance sidecar read by osteopano.data.dataset: runs trained on it are labelled synthetic.
    atomic_write_json(out / "dataset.json", {
        "synthetic": True,
        "generator": "osteopano.phantom.generate",
        "osteopano_version": __version__,
        "n": n, "seed": seed, "format": fmt, "width": width,
        "distractors": distractors.as_dict(),
        "grader": asdict(grader),
        "note": "Synthetic panoramic phantom: results on it are not clinical evidence.",
    })  # fmt: skip
    return rows

