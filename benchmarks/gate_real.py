"""The radiograph gate on real radiographs and on non-radiographs: pass / refusal rates and speed.

    python benchmarks/gate_real.py [--shared ../shared]

Prints, per folder of ``../shared`` (real-samples/* and real-masks/abdi-dev/images), how many real
radiographs pass the gate (target 100 %) with each refusal's reason; the refusal rate over the
non-radiograph corpus of tests/bad_inputs.py (generated, seeded: photos from scikit-image, documents,
noise, blank, inverted / rotated / cropped phantoms...) plus variants derived from the real images
(inverted, rotated, upside down, teeth crop, left half, noise of the same size) - target 100 %; and the
gate's milliseconds per image on the real images (median and max, the template already built) and
the one-off template read time. Real images carry no labels; nothing here is an accuracy figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _images(folder: Path) -> list[Path]:
    from osteopano.io.images import IMAGE_SUFFIXES

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()

    from bad_inputs import NOT_RADIOGRAPHS

    from osteopano.io.images import read_image
    from osteopano.prepare import gate

    t0 = time.perf_counter()
    gate._template()
    build_s = time.perf_counter() - t0

    folders = sorted(p for p in (args.shared / "real-samples").glob("*") if p.is_dir())
    folders.append(args.shared / "real-masks" / "abdi-dev" / "images")
    times: list[float] = []
    real: list[np.ndarray] = []
    total = passed = 0
    print("real radiographs (SHARED, unlabelled) - gate pass rate")
    for folder in folders:
        files = _images(folder) if folder.is_dir() else []
        ok = 0
        for path in files:
            image = read_image(path)
            t = time.perf_counter()
            verdict = gate.check_radiograph(image)
            times.append(time.perf_counter() - t)
            ok += verdict.passed
            if not verdict.passed:
                print(f"  REFUSED {path.name}: {verdict.reason}")
            if len(real) < 12 and path == files[len(files) // 2]:
                real.append(image.pixels)
        total += len(files)
        passed += ok
        rate = f"{ok / len(files):.1%}" if files else "n/a"
        print(f"  {folder.relative_to(args.shared)}: {ok}/{len(files)} pass ({rate})")
    if total:
        print(f"  all real: {passed}/{total} pass ({passed / total:.1%})")

    refused = n = 0
    print("non-radiographs - gate refusal rate")
    with tempfile.TemporaryDirectory() as tmp:
        from osteopano.errors import ImageReadError

        for kind, make in sorted(NOT_RADIOGRAPHS.items()):
            path = make(Path(tmp))
            try:
                verdict = gate.check_radiograph(read_image(path))
            except ImageReadError as exc:
                print(f"  {kind}: unreadable ({exc.reason})")
                continue
            n += 1
            refused += not verdict.passed
            print(f"  {kind}: {'refused - ' + str(verdict.reason) if not verdict.passed else 'PASSED (wrong)'}")
    rng = np.random.default_rng(0)
    for i, p in enumerate(real):
        h, w = p.shape
        for name, arr in (("inverted", 1 - p), ("rotated", np.rot90(p)), ("upside-down", p[::-1]),
                          ("teeth-crop", p[int(0.3 * h):int(0.6 * h), int(0.35 * w):int(0.65 * w)]),
                          ("left-half", p[:, : w // 2]), ("noise", rng.random(p.shape, dtype=np.float32))):
            verdict = gate.check_radiograph(np.ascontiguousarray(arr))
            n += 1
            refused += not verdict.passed
            if verdict.passed:
                print(f"  real #{i} {name}: PASSED (wrong)")
    print(f"  derived from {len(real)} real images x 6 changes: see above for any that passed")
    print(f"  all non-radiographs: {refused}/{n} refused ({refused / n:.1%})")
    if times:
        print(f"gate speed: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
              f"per image over {len(times)} real images; template read once in {build_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
