"""``osteopano train``: train a classifier with the study's protocol and evaluate it on the held-out test split."""

from __future__ import annotations

from pathlib import Path

import typer

from osteopano.errors import DataError

PRESETS = ("paper",)


def command(
    data: Path = typer.Argument(None, help="Manifest CSV, folder holding manifest.csv, or folder of class "
                                "subfolders. Not needed with --resume."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder to create (model, config, history, metrics)."),
    label_column: str = typer.Option("label", help="Manifest column holding the class (e.g. klemetti)."),
    label_map: str = typer.Option(None, help="Map raw values to two classes, e.g. "
                                  "C1=normal,C2=osteoporosis,C3=osteoporosis."),
    positive: str = typer.Option("osteoporosis", help="The positive (screen-positive) class."),
    seed: int = typer.Option(0, help="Fixes the split, the augmentation and the initialisation."),
    preset: str = typer.Option("paper", help="Protocol defaults: 'paper' = Brangakgi & Khadra 2024 "
                               "(224 px, Adam 2e-4, batch 32, <=100 epochs, patience 10, 50/25/25 split)."),
    backbone: str = typer.Option("efficientnet_lite0", help="timm model name; efficientnet_lite0 has offline "
                                 "ImageNet weights, others need to download them."),
    weights: str = typer.Option("imagenet", help="imagenet | none | PATH to a state dict / safetensors file."),
    epochs: int = typer.Option(100, min=1, help="Maximum epochs."),
    patience: int = typer.Option(10, min=1, help="Early stopping: epochs without val-loss improvement."),
    batch_size: int = typer.Option(32, min=1, help="Batch size."),
    lr: float = typer.Option(2e-4, min=0.0, help="Adam learning rate."),
    image_size: int = typer.Option(224, min=8, help="Network input size (square, the image is squashed)."),
    threshold: str = typer.Option("0.5", help="Decision threshold, chosen on the validation split: a number, "
                                  "'youden' or 'sens:0.9'."),
    precision: str = typer.Option("auto", help="auto | bf16 | fp32 (auto = bf16 autocast where the CPU has "
                                  "native bfloat16)."),
    workers: int = typer.Option(2, min=1, help="Threads decoding and preprocessing images."),
    resume: Path = typer.Option(None, help="Continue the interrupted run in this folder (its own settings)."),
    input_mode: str = typer.Option("whole", "--input", help="whole = the panoramic squashed to a square (the "
                                   "study); roi = both inferior-cortex crops (25 x 12 mm at 8 px/mm, located by "
                                   "osteopano.cortex.measure), which needs each image's pixel spacing."),
    pixel_spacing: float | None = typer.Option(None, "--pixel-spacing", min=0.001, max=5.0,
                                               help="--input roi: pixel spacing in mm for images with no manifest "
                                               "pixel_spacing_mm value (else the file's)."),
    covariates: str = typer.Option("", "--covariates", help="Clinical inputs joined to the image features in "
                                   "the head, from the manifest: age,sex (standardised age, sex one-hot). "
                                   "Samples missing one are left out; prediction then needs --age/--sex."),
) -> None:
    """Train a whole-image (or, with --input roi, cortex-ROI) classifier (ImageNet backbone + the study's dense head) and evaluate it once on
    the held-out test split. Writes model.safetensors, config.json, splits.csv, history.csv, curves.png,
    checkpoint.pt, metrics.json and plots into --out. On synthetic phantoms the figures are not clinical
    evidence."""
    from rich.console import Console

    from osteopano.train.config import RunConfig
    from osteopano.metrics.evaluation import parse_threshold_rule
    from osteopano.prepare.intensity import Preprocess
    from osteopano.train.loop import parse_label_map, resolve_precision, train_run

    console = Console()
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise DataError("--resume continues the run in its own folder; drop --out or give the same folder")
        _run(lambda: train_run(None, resume, resume=True, workers=workers, console=console), resume, console)
        return
    if data is None or out is None:
        raise DataError("give DATA and --out (or --resume RUN)")
    if preset not in PRESETS:
        raise DataError(f"unknown preset {preset!r} (available: {', '.join(PRESETS)})")
    if input_mode not in ("whole", "roi"):
        raise DataError(f"--input {input_mode!r}: use whole or roi")
    parse_threshold_rule(threshold)  # fail before the images are read
    resolve_precision(precision)
    from osteopano.model.networks import backbone_mean_std

    from osteopano.prepare.roi import parse_covariates

    mean, std = backbone_mean_std(backbone)
    # ROI crops: percentile window only; CLAHE's 8x8 tiles on a 25 x 12 mm crop would flatten the
    # cortex / trabecular contrast the model is meant to see
    clahe = {"clahe_clip": 0.0} if input_mode == "roi" else {}
    cfg = RunConfig(
        data=str(data.expanduser().resolve()), label_column=label_column, label_map=parse_label_map(label_map),
        positive=positive, seed=seed, preset=preset, backbone=backbone, weights=str(weights),
        image_size=image_size, preprocess=Preprocess(size=image_size, mean=mean, std=std, **clahe).to_dict(),
        input_mode=input_mode, pixel_spacing_mm=pixel_spacing, covariates=parse_covariates(covariates),
        epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, precision=precision,
        threshold_rule=threshold,
    )
    _run(lambda: train_run(cfg, out, workers=workers, console=console), out, console)


def _run(job, out: Path, console) -> None:
    try:
        job()
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; continue with: osteopano train --resume {out}")
        raise typer.Exit(130) from None
