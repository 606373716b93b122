"""Screen an archive on a Ray cluster with Ray Data (optional: ``pip install 'osteopano[scale]'``).

    osteopano predict MODEL.onnx INPUTS --out results.csv --ray [ADDRESS]

or ``predict_ray(model, inputs, out, address=...)``. The pipeline, in Ray Data terms:

1. **list** the image files on the driver (``plan_batch``, the same walk and resume rules as
   ``predict``; the manifest spacings travel with each path) -> ``ray.data.from_items``;
2. **decode + prepare** in ``map_batches`` (one CPU): the ``Screener``'s own staging (read, spacing
   rule, radiograph gate, the model's preparation chain from the ONNX metadata's ``ModelSpec``);
3. **score** with a pool of ONNX Runtime actors (``ActorPoolStrategy``, one per CPU), one session per
   actor with one intra-op thread, so that N cores run N sessions side by side. Both steps ask for
   one CPU, so Ray Data's optimiser fuses them into one actor operator: an actor prepares and scores
   its own blocks and the network inputs never travel through the object store;
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

import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from osteopano.errors import DataError

TASK_IMAGES = 16  # images per prepare block: small enough that the last blocks spread over the actors
STEP_CPUS = 1  # what the prepare step and each actor ask for: equal, so that Ray Data fuses the two
IN_FLIGHT = 2  # blocks queued per actor: one at work, one waiting (1 left actors idle between blocks,
               # the default 4 queued a small job's every block on the first actor that was ready)


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DataError("--ray needs Ray Data: pip install 'osteopano[scale]'") from None
    return ray


def _stager(spec: dict[str, Any], model_id: str, threshold: float, gate: bool) -> Any:
    """A ``Screener`` around a session-less ``Engine`` (spec, id): it stages, it never scores."""
    from osteopano.prepare.spec import ModelSpec
    from osteopano.screen.engines import Engine
    from osteopano.screen.screener import Screener

    return Screener(Engine(ModelSpec.from_dict(spec), {}, model_id), threshold=threshold, gate=gate)


def _prepare_batch(batch: dict[str, np.ndarray], spec: dict[str, Any], model_id: str, threshold: float,
                   gate: bool, pixel_spacing_mm: float | None, covariates: dict[str, Any] | None) -> dict[str, Any]:
    """map_batches task: paths -> the staged result (pickled) and the network input, one row per path
    (``Screener._stage``: read, spacing, gate, preparation - exactly what ``predict`` does)."""
    screener = _stager(spec, model_id, threshold, gate)
    shape, n_cov = screener.spec.input_shape(), (screener.spec.n_covariates,)
    results, xs, covs, ok = [], [], [], []
    for path, manifest in zip(batch["path"], batch["manifest_spacing"]):
        spacings = {} if np.isnan(manifest) else {Path(str(path)).resolve(): float(manifest)}
        result, _, model_input = screener._stage(Path(str(path)), pixel_spacing_mm, spacings, covariates)
        results.append(pickle.dumps(result))
        ok.append(model_input is not None)
        xs.append(model_input.x if model_input is not None else np.zeros(shape, np.float32))
        covs.append(model_input.covariates if model_input is not None else np.zeros(n_cov, np.float32))
    return {"result": np.asarray(results, dtype=object), "ok": np.asarray(ok),
            "x": np.stack(xs).astype(np.float32, copy=False), "cov": np.stack(covs).astype(np.float32, copy=False)}


class _Score:
    """Actor: one ONNX Runtime session (intra-op threads 1) scoring prepared batches."""

    def __init__(self, model: str):
        from osteopano.screen.engines import OnnxEngine

        self.engine = OnnxEngine(model, threads=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ok = np.asarray(batch["ok"], dtype=bool)
        prob = np.full(len(ok), np.nan, np.float64)
        if ok.any():
            prob[ok] = self.engine.probabilities(batch["x"][ok], batch["cov"][ok])
        return {"result": batch["result"], "ok": ok, "probability": prob}


def predict_ray(model: str | Path, inputs: Iterable[str | Path], out: str | Path, *, address: str | None = None,
                resume: bool = False, batch_size: int = 8, actors: int | None = None,
                threshold: float | None = None, pixel_spacing_mm: float | None = None, gate: bool = True,
                covariates: dict[str, Any] | None = None,
                on_rows: Callable[[int], None] | None = None) -> dict[str, int]:
    """Screen ``inputs`` with the ONNX ``model`` on Ray Data; rows go to ``out`` (.csv or .jsonl) exactly as
    ``osteopano predict`` writes them (same columns, order, resume rules). ``address``: a running cluster
    ('auto', 'HOST:6379', 'ray://...'); None joins ``RAY_ADDRESS``'s cluster or starts a local one (unless
    ``ray.init`` was called already). ``actors``: ONNX sessions (default one per cluster CPU). Returns
    {'screened', 'errors', 'skipped'} (skipped: already in ``out`` with ``resume``). ``on_rows(n)`` is
    called after each batch of ``n`` rows is written (a progress bar)."""
    ray = _require_ray()
    from osteopano.io.rows import RowWriter
    from osteopano.io.spacing import manifest_spacings
    from osteopano.screen.batch import Outputs, plan_batch
    from osteopano.screen.screener import Screener
    from osteopano.screen.engines import OnnxEngine

    model, out = Path(model), Path(out)
    if model.suffix.lower() != ".onnx" or not model.is_file():
        raise DataError(f"{model}: --ray runs an .onnx file (osteopano export RUN writes RUN/model.onnx)")
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise DataError(f"{out}: the Ray output must end in .csv or .jsonl")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    inputs = [Path(p) for p in inputs]
    plan = plan_batch(inputs, Outputs(out=out), resume)
    counts = {"screened": 0, "errors": 0, "skipped": plan.skipped_done}
    # the file's check and its metadata, once, on the driver
    screener = Screener(OnnxEngine(model), threshold=threshold, gate=gate)
    if not plan.todo:
        return counts
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # one actor per CPU. The prepare step and the actor ask for the same one CPU, so Ray Data fuses them
    # into one operator: each actor decodes, prepares and scores its own blocks, and the network inputs
    # never cross the object store (separate prepare tasks beside quarter-CPU actors: 73 % of the
    # single-machine throughput on 1,200 images on 2 CPUs; fused: 88 %)
    n_actors = actors or cpus
    spacings = manifest_spacings(plan.todo)
    items = [{"path": str(p), "manifest_spacing": spacings.get(p.resolve(), np.nan)} for p in plan.todo]
    # blocks of TASK_IMAGES images (at least one scoring batch), enough of them to keep every actor busy
    task_images = max(batch_size, TASK_IMAGES)
    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // task_images)))
    ds = ds.map_batches(_prepare_batch, fn_kwargs={
        "spec": screener.spec.to_dict(), "model_id": screener.model_id, "threshold": screener.threshold,
        "gate": gate, "pixel_spacing_mm": pixel_spacing_mm, "covariates": covariates},
        batch_size=task_images, batch_format="numpy", num_cpus=STEP_CPUS)
    ds = ds.map_batches(_Score, fn_constructor_args=(str(model.resolve()),), batch_size=batch_size,
                        batch_format="numpy", num_cpus=STEP_CPUS,
                        compute=ray.data.ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=IN_FLIGHT))
    with RowWriter(out, screener.columns(), resume=resume, drop=plan.retried) as writer:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            rows = []
            for blob, ok, prob in zip(batch["result"], batch["ok"], batch["probability"]):
                result = pickle.loads(blob)
                if ok:
                    p = float(prob)
                    result = result.replace(probability=p, decision=p >= screener.threshold)
                rows.append(result.to_row())
            writer.write(rows)
            counts["errors"] += sum(r["probability"] is None for r in rows)
            counts["screened"] += sum(r["probability"] is not None for r in rows)
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
