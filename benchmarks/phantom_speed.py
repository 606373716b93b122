"""Speed of the SYNTHETIC phantom generator (``osteopano synth``).

Writes ``--n`` phantoms at ``--width`` with ``--workers`` processes into a temporary folder and
prints wall time, images/s and the set's summary (labels, Klemetti classes, oracle AUC).

Acceptance: 400 images at width 1600 in under 120 s on 2 cores.

    python benchmarks/phantom_speed.py [--n 400] [--seed 3] [--width 1600] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from osteopano.phantom import generate as phantom
from osteopano.commands.synth import oracle_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phantom-speed-") as tmp:
        start = time.perf_counter()
        rows = phantom.generate(tmp, args.n, args.seed, width=args.width, workers=args.workers, progress=False)
        wall = time.perf_counter() - start
    labels, klemetti = Counter(r["label"] for r in rows), Counter(r["klemetti"] for r in rows)
    table = Table(title=f"Synthetic phantom generation: n={args.n}, width={args.width}, workers={args.workers}")
    for column in ("wall s", "images/s", "osteoporosis", "C1 / C2 / C3", "oracle AUC", "< 120 s for 400"):
        table.add_column(column)
    auc = oracle_auc(rows)
    table.add_row(
        f"{wall:.1f}",
        f"{args.n / wall:.2f}",
        f"{labels['osteoporosis'] / args.n:.0%}",
        " / ".join(f"{klemetti[c] / args.n:.0%}" for c in ("C1", "C2", "C3")),
        "n/a" if auc is None else f"{auc:.3f}",
        "yes" if wall * 400 / args.n < 120 else "NO",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
