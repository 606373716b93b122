"""Rebuild the radiograph gate's frozen layout template (src/osteopano/prepare/data/gate_layout.npy)
from the current phantom. The gate's thresholds were set against the shipped template; after a rebuild,
run ``python benchmarks/gate_real.py`` and check that every real radiograph still passes and every
non-radiograph is still refused before committing the new file.

    python benchmarks/gate_template.py [--out PATH] [--check]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from osteopano.prepare import gate

DEFAULT = Path(__file__).resolve().parents[1] / "src" / "osteopano" / "prepare" / gate.TEMPLATE_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT)
    parser.add_argument("--check", action="store_true",
                        help="only print how far the current phantom's layout is from the shipped one")
    args = parser.parse_args()
    built = gate.build_template()
    shipped = gate._template()
    corr = float(np.corrcoef(built.ravel(), shipped.ravel())[0, 1])
    print(f"current phantom's layout vs shipped template: correlation {corr:.3f}, "
          f"max |difference| {float(np.abs(built - shipped).max()):.3f}")
    if not args.check:
        np.save(args.out, built.astype(np.float32))
        print(f"wrote {args.out}: now run python benchmarks/gate_real.py")


if __name__ == "__main__":
    main()
