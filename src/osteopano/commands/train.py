"""``osteopano train``: train a classifier with the study's protocol and evaluate it on the held-out test split."""

from __future__ import annotations

from pathlib import Path

import typer

from osteopano.errors import DataError



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
    backbone: str = typer.Option(None, help="(preset: efficientnet_lite0) timm model name; efficientnet_lite0 has offline "
                                 "ImageNet weights, others need to download them."),
    weights: str = typer.Option(None, help="(preset: imagenet) imagenet | none | PATH to a state dict / safetensors file."),
    epochs: int = typer.Option(None, min=1, help="Maximum epochs (preset: 100)."),
    patience: int = typer.Option(None, min=1, help="Early stopping: epochs without val-loss improvement "
                                 "(preset: 10)."),
    batch_size: int = typer.Option(None, min=1, help="Batch size (preset: 32)."),
    lr: float = typer.Option(None, min=0.0, help="Adam learning rate (preset: 0.0002)."),
    image_size: int = typer.Option(None, min=8, help="Network input size, square, the image is squashed "
                                   "(preset: 224)."),
    threshold: str = typer.Option(None, help="Decision threshold, chosen on the validation split: a number, "
                                  "'youden' or 'sens:0.9' (preset: 0.5)."),
    allow_duplicates: bool = typer.Option(False, "--allow-duplicates", help="Train although identical images "
                                          "appear under different patients or labels (recorded in config.json "
                                          "and the data set's problems); by default the data set is refused."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: the machine's cores, at most 8); recorded "
                                "in config.json, since results depend on it."),
    precision: str = typer.Option("auto", help="auto | bf16 | fp32 (auto = bf16 autocast where the CPU has "
                                  "native bfloat16)."),
    workers: int = typer.Option(2, min=1, help="Threads decoding and preprocessing images."),
    resume: Path = typer.Option(None, help="Continue the interrupted run in this folder (its own settings)."),
    input_mode: str = typer.Option("whole", "--input", help="whole = the panoramic squashed to a square (the "
                                   "study); roi = both inferior-cortex crops (25 x 12 mm at 8 px/mm, located by "
                                   "osteopano.cortex.measure), which needs each image's pixel spacing."),
    pixel_spacing: float | None = typer.Option(None, "--pixel-spacing", min=0.001, max=5.0,
                                               help="--input roi: pixel spacing in mm for every image (the spacing rule: README, Pixel spacing)."),
    covariates: str = typer.Option("", "--covariates", help="Clinical inputs joined to the image features in "
                                   "the head, from the manifest: age,sex (standardised age, sex one-hot). "
                                   "Samples missing one are left out; prediction then needs --age/--sex."),
) -> None:
    """Train a whole-image (or, with --input roi, cortex-ROI) classifier (ImageNet backbone + the study's dense head) and evaluate it once on
    the held-out test split. Writes model.safetensors, config.json, splits.csv, history.csv, curves.png,
    checkpoint.pt, metrics.json and plots into --out. On synthetic phantoms the figures are not clinical
    evidence."""
    from rich.console import Console

    from osteopano.data.labels import parse_label_map
    from osteopano.metrics.evaluation import parse_threshold_rule
    from osteopano.model.config import RunConfig
    from osteopano.prepare.covariates import parse_covariates
    from osteopano.train.loop import train_run
    from osteopano.train.tensors import resolve_precision

    console = Console()
    if resume is not None:
        if out is not None and out.resolve() != resume.resolve():
            raise DataError("--resume continues the run in its own folder; drop --out or give the same folder")
        _run(lambda: train_run(None, resume, resume=True, workers=workers, console=console), resume, console)
        return
    if data is None or out is None:
        raise DataError("give DATA and --out (or --resume RUN)")
    if input_mode not in ("whole", "roi"):
        raise DataError(f"--input {input_mode!r}: use whole or roi")
    if threshold is not None:
        parse_threshold_rule(threshold)  # fail before the images are read
    resolve_precision(precision)
    # the preset gives every value not given here (RunConfig.from_preset): the CLI and the Python API
    # train the same model
    cfg = RunConfig.from_preset(
        preset, data=str(data.expanduser().resolve()), label_column=label_column,
        label_map=parse_label_map(label_map), positive=positive, seed=seed, backbone=backbone, weights=weights,
        image_size=image_size, input_mode=input_mode, pixel_spacing_mm=pixel_spacing,
        covariates=parse_covariates(covariates), epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
        precision=precision, threshold_rule=threshold, threads=threads, allow_duplicates=allow_duplicates)
    _run(lambda: train_run(cfg, out, workers=workers, console=console), out, console)


def _run(job, out: Path, console) -> None:
    try:
        job()
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; continue with: osteopano train --resume {out}")
        raise typer.Exit(130) from None
