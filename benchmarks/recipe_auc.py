"""Does the fast preprocessing recipe keep the test AUC? Same data, split, seed and training, two recipes.

    python benchmarks/recipe_auc.py DEV_DIR EXTERNAL_DIR [--epochs 6] [--out /tmp/recipe-auc]

DEV_DIR and EXTERNAL_DIR are ``osteopano synth`` folders (SYNTHETIC phantoms: the figures are not
clinical evidence). For each recipe of ``osteopano.prepare.intensity`` (full-v1, fast-v2) it trains
one run (the CLI's defaults, Klemetti labels C1 = normal, C2/C3 = osteoporosis) and prints the
internal test-split AUC and the external (DXA-label) AUC with their 95% intervals.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from osteopano.model.networks import backbone_mean_std
from osteopano.prepare.intensity import RECIPES, Preprocess
from osteopano.model.config import RunConfig
from osteopano.train.evaluate import evaluate_run
from osteopano.train.loop import train_run


def _auc(metrics: dict, n: int) -> str:
    auc = metrics["auc"]
    if auc["value"] is None:
        return auc["note"]
    ci = f" (95% CI {auc['ci'][0]:.3f}-{auc['ci'][1]:.3f})" if auc["ci"] else ""
    return f"{auc['value']:.3f}{ci}, n={n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dev", type=Path)
    parser.add_argument("external", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recipe-auc"))
    args = parser.parse_args()
    mean, std = backbone_mean_std("efficientnet_lite0")
    table = Table(title=f"Test AUC by preprocessing recipe (SYNTHETIC phantoms; {args.epochs} epochs, seed {args.seed})")
    for col in ("recipe", "internal test AUC", "external AUC (DXA label)"):
        table.add_column(col)
    for recipe in RECIPES:
        run = args.out / recipe
        cfg = RunConfig(data=str(args.dev.resolve()), label_column="klemetti",
                        label_map={"C1": "normal", "C2": "osteoporosis", "C3": "osteoporosis"},
                        seed=args.seed, epochs=args.epochs, patience=3,
                        preprocess=Preprocess(mean=mean, std=std, recipe=recipe).to_dict())
        train_run(cfg, run)
        internal = json.loads((run / "metrics.json").read_text())
        external = evaluate_run(run, args.external, run / "external")
        n_test = sum(internal["split_sizes"]["test"].values())
        table.add_row(recipe, _auc(internal, n_test), _auc(external, external["n"]))
    Console().print(table)


if __name__ == "__main__":
    main()
