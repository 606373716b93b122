"""PNG/JPEG decode cost: cv2.imdecode (libpng) beside osteopano's read path, in one run.

    python benchmarks/decode_speed.py [--images DIR ...] [--n 12] [--rounds 3] [--threads 2]

* images: ``--images DIR`` (repeatable); default the real radiographs of ../shared/real-samples/native and
  dc1000-more (2943 x 1435 8-bit PNG) when present, else ``--n`` SYNTHETIC phantoms (Pillow-written
  16-bit PNGs, whose Paeth rows png_fast leaves to libpng). The files are read into memory first.
* CPU ms/image, one thread, best of ``--rounds``:
  ``cv2.imdecode`` alone; ``png_fast`` (the chunk walk with its CRCs, ``check_png(keep=True)``, then
  ``decode_png``); ``read_image`` end to end (integrity, Pillow's header, decode, float32 [0, 1]) with
  png_fast, and the same with png_fast switched off (the libpng path as before).
* threads: wall seconds for all images on 1 thread and on ``--threads`` threads (each thread a share of
  the images), ``read_image`` with and without png_fast: a speed-up near the thread count means the
  decode releases the GIL (ISA-L's inflate, numpy's additions, libpng inside OpenCV) - given free
  cores. On a loaded machine the GIL column says more: how fast a second thread's pure-Python loop
  runs while one thread decodes, against its rate while that thread sleeps (~100 %: the decode
  releases the GIL; ~0 %: it holds it, as ``sorted`` on a list does, shown for comparison).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from speed_common import bench_images

from osteopano.io import images
from osteopano.io.integrity import check_png
from osteopano.io.png_fast import decode_png, running_sums


def _cpu_ms(fn, blobs: list[bytes], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for blob in blobs:
            fn(blob)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(blobs)


def _wall(fn, blobs: list[bytes], threads: int, rounds: int) -> float:
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(fn, blobs))
            best = min(best, time.perf_counter() - start)
    return best


def _spin(stop: threading.Event, out: list[int]) -> None:
    count = 0
    while not stop.is_set():
        count += 1
    out.append(count)


def _other_thread_rate(fn, items: list) -> float:
    """Iterations/s of a pure-Python loop on a second thread while ``fn`` runs over ``items`` here."""
    stop, out = threading.Event(), []
    spinner = threading.Thread(target=_spin, args=(stop, out))
    spinner.start()
    start = time.perf_counter()
    for item in items:
        fn(item)
    seconds = time.perf_counter() - start
    stop.set()
    spinner.join()
    return out[0] / seconds


def _gil_rows(blobs: list[bytes]) -> list[tuple[str, float]]:
    from isal import isal_zlib

    walks = [check_png(io.BytesIO(b), inflate=False, keep=True) for b in blobs]
    streams, raws = [], []
    for walk in walks:
        stream = b"".join(walk["idat"])
        raw = isal_zlib.decompress(stream)
        streams.append((stream, len(raw)))
        height = int.from_bytes(walk["ihdr"][4:8], "big")
        raws.append(np.frombuffer(raw, np.uint8).reshape(height, -1)[:, 1:])
    idle = _other_thread_rate(lambda _: time.sleep(0.03), list(range(10)))
    listed = list(np.random.default_rng(0).random(300_000))
    ops = [("isal_zlib inflate", lambda s: isal_zlib.decompressobj().decompress(*s), streams),
           ("png_fast.running_sums (Sub rows)", lambda r: running_sums(r, 1), raws),
           ("png_fast.decode_png", lambda w: decode_png(w["ihdr"], w["idat"]), walks),
           ("cv2.imdecode (libpng)", lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), -1), blobs),
           ("sorted(list) (holds the GIL)", lambda _: sorted(listed), list(range(3)))]
    return [(name, 100 * _other_thread_rate(fn, items) / idle) for name, fn, items in ops]


def _png_fast(blob: bytes):
    walk = check_png(io.BytesIO(blob), inflate=False, keep=True)
    return decode_png(walk["ihdr"], walk["idat"])


def _read(blob: bytes):
    return images.read_image_bytes(blob, "bench.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, action="append")
    parser.add_argument("--n", type=int, default=12, help="at most this many images (0 = all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=2943, help="phantom width when no real images")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths, described = bench_images(args.images, args.n, Path(tmp), default_n=args.n or 12,
                                        width=args.width)
        blobs = [p.read_bytes() for p in paths]
    pngs = [b for b in blobs if b.startswith(b"\x89PNG")]
    fast = sum(_png_fast(b) is not None for b in pngs)
    print(f"{described}; {fast} of {len(pngs)} PNGs on png_fast; load average "
          f"{os.getloadavg()[0]:.2f}; best of {args.rounds} rounds")
    for blob in blobs[:2]:  # warm-up: imports, the first allocation of each size
        _read(blob)
    decode = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
    real_decode_png = images.decode_png
    off = lambda *a: None
    rows = [("cv2.imdecode (libpng)", _cpu_ms(decode, blobs, args.rounds))]
    if pngs:
        rows.append(("check_png walk + png_fast.decode_png", _cpu_ms(_png_fast, pngs, args.rounds)))
    rows.append(("read_image, png_fast", _cpu_ms(_read, blobs, args.rounds)))
    images.decode_png = off
    rows.append(("read_image, png_fast off (libpng)", _cpu_ms(_read, blobs, args.rounds)))
    images.decode_png = real_decode_png
    print(f"\n| {'decode':40s} | CPU ms/image |\n|{'-' * 42}|{'-' * 14}|")
    for name, ms in rows:
        print(f"| {name:40s} | {ms:12.1f} |")

    print(f"\n| {'read_image, ' + str(len(blobs)) + ' images':40s} | 1 thread s | {args.threads} threads s "
          f"| speed-up |\n|{'-' * 42}|{'-' * 12}|{'-' * 13}|{'-' * 10}|")
    for name, patch in (("png_fast", real_decode_png), ("png_fast off (libpng)", off)):
        images.decode_png = patch
        one = _wall(_read, blobs, 1, args.rounds)
        many = _wall(_read, blobs, args.threads, args.rounds)
        print(f"| {name:40s} | {one:10.3f} | {many:11.3f} | {one / many:8.2f} |")
    images.decode_png = real_decode_png
    if pngs:
        print(f"\n| {'GIL: one thread runs':40s} | other thread's Python, % of idle |\n|{'-' * 42}|{'-' * 35}|")
        for name, share in _gil_rows(pngs[:4]):
            print(f"| {name:40s} | {share:33.0f} |")


if __name__ == "__main__":
    main()
