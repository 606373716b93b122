"""Screen an archive on a Ray cluster with Ray Data (optional: ``pip install 'osteopano[scale]'``).

    osteopano predict MODEL.onnx INPUTS --out results.csv --ray [ADDRESS]

or ``predict_ray(model, inputs, out, address=...)``. The pipeline, in Ray Data terms:

1. **list** the image files on the driver (``iter_image_paths``, the same walk as ``predict``;
   with ``resume`` the paths already in ``out`` are left out) -> ``ray.data.from_items``;
2. **decode + prepare** in ``map_batches`` tasks (one CPU each): ``read_image`` and the model's own
   preprocessing recipe, taken from the ONNX metadata (no session is loaded there);
3. **score** with a pool of ONNX Runtime actors (``ActorPoolStrategy``), one session per actor with
   one intra-op thread, so that N cores run N sessions side by side;
4. **write** on the driver as batches arrive: the same rows and columns as ``osteopano predict``
   (``RowWriter``: CSV or JSONL, flushed and fsynced per batch), so an interrupted run continues
   with ``resume=True`` (``--resume``). Row order is the input order.

Every worker must see the images at the same paths (a shared file system) and the model file.
On a real cluster: ``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the
others (or a KubeRay ``RayCluster``), ``pip install 'osteopano[scale]'`` on all of them, then run
``osteopano predict ... --ray HEAD:6379`` (or ``--ray auto`` on a cluster node). Expect about what
one core does in ``osteopano predict`` per CPU of the cluster: decoding a 2943 x 1435 PNG takes
~27 ms of a core and the network ~10 ms, so roughly 20-25 images/s per core.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from osteopano.errors import DataError, OsteopanoError

RESULT_COLUMNS = ("path", "patient_id", "probability", "decision", "threshold", "model_id", "error")


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DataError("--ray needs Ray Data: pip install 'osteopano[scale]'") from None
    return ray


def _engine_kwargs(engine: Any) -> dict[str, Any]:
    """What ``Engine`` needs to prepare inputs, without the session (small, picklable)."""
    return {"preprocess": engine.preprocess.to_dict(), "classes": engine.classes, "positive": engine.positive,
            "threshold": engine.threshold, "model_id": engine.model_id, "card": {},
            "input_spec": engine.input_spec}


def _prepare_batch(batch: dict[str, np.ndarray], engine_kwargs: dict[str, Any],
                   pixel_spacing_mm: float | None, covariates: dict[str, Any] | None) -> dict[str, Any]:
    """map_batches task: paths -> prepared network inputs (or the error), one row per path."""
    from osteopano.io.images import read_image
    from osteopano.prepare.intensity import Preprocess
    from osteopano.screen.engines import Engine

    engine = Engine(**dict(engine_kwargs, preprocess=Preprocess.from_dict(engine_kwargs["preprocess"])))
    xs, covs, patients, errors = [], [], [], []
    for path in batch["path"]:
        try:
            image = read_image(path)
            spacing = pixel_spacing_mm if pixel_spacing_mm is not None else image.pixel_spacing_mm
            prepared = engine.model_input(image, spacing, covariates)
            xs.append(prepared.x.astype(np.float32, copy=False))
            covs.append(prepared.covariates.astype(np.float32, copy=False))
            patients.append(image.patient_id or "")
            errors.append("")
        except (OsteopanoError, ValueError) as exc:
            xs.append(None)
            covs.append(None)
            patients.append("")
            errors.append(str(exc) or type(exc).__name__)
    shape = next((v.shape for v in xs if v is not None), (1,))  # all unreadable: any shape will do
    n_cov = next((v.shape for v in covs if v is not None), (0,))
    return {"path": np.asarray(batch["path"]),
            "x": np.stack([v if v is not None else np.zeros(shape, np.float32) for v in xs]),
            "cov": np.stack([v if v is not None else np.zeros(n_cov, np.float32) for v in covs]),
            "patient_id": np.asarray(patients), "error": np.asarray(errors)}


class _Score:
    """Actor: one ONNX Runtime session (intra-op threads 1) scoring prepared batches."""

    def __init__(self, model: str, threshold: float | None):
        from osteopano.screen.engines import OnnxEngine

        self.engine = OnnxEngine(model, threads=1)
        if threshold is not None:
            self.engine.threshold = float(threshold)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ok = np.asarray([e == "" for e in batch["error"]])
        prob = np.full(len(ok), np.nan, np.float64)
        if ok.any():
            prob[ok] = self.engine.probabilities(batch["x"][ok], batch["cov"][ok])
        return {"path": batch["path"], "patient_id": batch["patient_id"], "probability": prob,
                "error": batch["error"]}


def predict_ray(model: str | Path, inputs: Iterable[str | Path], out: str | Path, *, address: str | None = None,
                resume: bool = False, batch_size: int = 8, actors: int | None = None,
                threshold: float | None = None, pixel_spacing_mm: float | None = None,
                covariates: dict[str, Any] | None = None, exclude: Iterable[Path] = (),
                on_rows: Callable[[int], None] | None = None) -> dict[str, int]:
    """Screen ``inputs`` with the ONNX ``model`` on Ray Data; rows go to ``out`` (.csv or .jsonl) as in
    ``osteopano predict``. ``address``: a running cluster ('auto', 'HOST:6379', 'ray://...'); None joins
    the cluster of ``RAY_ADDRESS`` or starts a local one (unless ``ray.init`` was called already).
    ``actors``: ONNX sessions (default: the cluster's CPUs, at least 1). Returns counts
    {'screened', 'errors', 'skipped'} (skipped: already in ``out`` with ``resume``). ``on_rows(n)`` is
    called after each batch of ``n`` rows is written (a progress bar)."""
    ray = _require_ray()
    from osteopano.screen.batch import RowWriter, ScreeningResult, done_paths, iter_image_paths
    from osteopano.screen.engines import OnnxEngine

    model, out = Path(model), Path(out)
    if model.suffix.lower() != ".onnx" or not model.is_file():
        raise DataError(f"{model}: --ray runs an .onnx file (osteopano export RUN writes RUN/model.onnx)")
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"{out}: the Ray output must end in .csv or .jsonl")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    done = done_paths(out) if resume else set()
    paths = [str(p) for p in iter_image_paths(inputs, exclude)]
    todo = [p for p in paths if p not in done]
    counts = {"screened": 0, "errors": 0, "skipped": len(paths) - len(todo)}
    if not paths:
        raise DataError("no images found in " + ", ".join(str(p) for p in inputs))
    engine = OnnxEngine(model)  # checks the file and reads its metadata once, on the driver
    if threshold is not None:
        engine.threshold = float(threshold)
    if not todo:
        return counts
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False) if address else ray.init(include_dashboard=False, log_to_driver=False,
                                                                   configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # the network takes ~1/4 of an image's CPU time (decode + prepare the rest): one session per 4 CPUs,
    # each reserving a quarter CPU so that the prepare tasks can use every core
    n_actors = actors or max(1, round(cpus / 4))
    ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, -(-len(todo) // batch_size)))
    ds = ds.map_batches(_prepare_batch, fn_kwargs={"engine_kwargs": _engine_kwargs(engine),
                                                   "pixel_spacing_mm": pixel_spacing_mm, "covariates": covariates},
                        batch_size=batch_size, batch_format="numpy", num_cpus=1)
    ds = ds.map_batches(_Score, fn_constructor_args=(str(model.resolve()), threshold), batch_size=batch_size,
                        batch_format="numpy", num_cpus=0.25, concurrency=n_actors)
    with RowWriter(out, resume=resume and out.exists()) as writer:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            rows = []
            for path, patient, prob, error in zip(batch["path"], batch["patient_id"], batch["probability"],
                                                  batch["error"]):
                if error:
                    result = ScreeningResult(str(path), None, None, None, engine.threshold, engine.model_id,
                                             str(error))
                else:
                    p = float(prob)
                    result = ScreeningResult(str(path), str(patient) or None, p, p >= engine.threshold,
                                             engine.threshold, engine.model_id)
                rows.append(result.to_row())
            writer.write(rows)
            counts["errors"] += sum(r["error"] is not None for r in rows)
            counts["screened"] += sum(r["error"] is None for r in rows)
            if on_rows is not None:
                on_rows(len(rows))
    return counts


def predict_command(model: Path, inputs: list[Path], out: Path | None, *, address: str | None,
                    unsupported: list[str], **options: Any) -> None:
    """``osteopano predict ... --ray``: checks, ``predict_ray``, a one-line summary on stderr."""
    import sys

    if out is None:
        raise DataError("--ray needs --out FILE.csv or FILE.jsonl (the rows are written there)")
    if unsupported:
        raise DataError(f"--ray does not do {', '.join(unsupported)}: run without --ray for those")
    counts = predict_ray(model, inputs, out, address=address, **options)
    print(f"{counts['screened']} image(s) screened on Ray, {counts['errors']} unreadable; rows in {out}"
          + (f" (plus {counts['skipped']} from before)" if counts["skipped"] else ""), file=sys.stderr)
    if counts["screened"] == 0 and counts["errors"]:
        raise DataError(f"none of the {counts['errors']} input files could be read")
