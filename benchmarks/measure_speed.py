"""Throughput of the cortex measurement (``osteopano measure``): images/s, CPU ms per image and CPU use.

    python benchmarks/measure_speed.py [--images DIR ...] [--n 30] [--workers 1,2] [--modes threads,processes]
                                       [--batch-size 4] [--no-cli]

* images: ``--images DIR`` (repeatable; PNG/JPEG); default the real radiographs of
  ../shared/real-samples/native and dc1000-more (2943 x 1435 PNG) when present, else ``--n``
  SYNTHETIC phantoms 2943 px wide. ``--n`` caps how many are used (0 = all).
* each configuration (``--workers`` x ``--modes``; 1 worker = inline, no pool) runs in a fresh process
  what ``osteopano measure DIR --out rows.jsonl`` runs (``screen.batch.run_batch``, decode included),
  after a warm-up on 2 images, writing rows; the rows of every configuration are compared with the
  first one's (they must be identical: order and values).
* ``measure CLI``: ``osteopano measure DIR --out rows.jsonl`` end to end (process start, imports and the
  staging processes' start included; default workers).
* CPU ms/image: the CPU time of the process and all its descendants (the staging processes) in the
  timed part, per image - what an image costs whatever else runs; CPU %: that over the wall time
  (200 % = both cores of a 2-core machine). images/s depends on the cores one gets: on a shared
  machine compare CPU ms/image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from speed_common import bench_images

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of ``root`` and every live descendant, by pid."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    keep, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier and pid not in keep]
        keep.update(frontier)
    return {pid: cpu[pid] for pid in keep if pid in cpu}


def _worker(args: argparse.Namespace) -> None:
    """Runs in the subprocess: warm up, measure the list, print one JSON line."""
    from osteopano.screen.batch import Outputs, plan_batch, run_batch
    from osteopano.screen.screener import Screener

    paths = [Path(p) for p in Path(args.images).read_text().split("\n") if p]
    processes = {"threads": False, "processes": True}[args.mode]

    def batches(todo: list[Path], out: Path | None):
        outputs = Outputs(out=out, jsonl_polylines=True)
        screener = Screener(None, measure=True)
        return run_batch(screener, todo, plan_batch(todo, outputs, False), outputs, batch_size=args.batch_size,
                         workers=args.workers, processes=processes)

    for _ in batches(paths[:2], None):  # warm-up: imports, the gate's template, the forkserver
        pass
    before = tree_cpu(os.getpid())
    sampler = TreeSampler(os.getpid())
    start = time.perf_counter()
    errors = 0
    for batch in batches(paths, Path(args.rows)):
        errors += sum(bool(item.row.get("error")) for item in batch)
    seconds = time.perf_counter() - start
    after = sampler.stop()
    cpu = sum(after.values()) - sum(v for pid, v in before.items() if pid in after)
    print(json.dumps({"n": len(paths), "seconds": seconds, "cpu_seconds": cpu, "errors": errors}))


class TreeSampler:
    """Samples ``tree_cpu(root)`` every 50 ms on a thread and keeps each pid's last value, so the CPU of
    processes that ended meanwhile (staging processes are not this process's children to reap: a
    forkserver forks them) still counts; at most 50 ms per process is missed."""

    def __init__(self, root: int, interval: float = 0.05):
        import threading

        self.root, self.interval, self.seen = root, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for pid, value in tree_cpu(self.root).items():
            self.seen[pid] = max(self.seen.get(pid, 0.0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.seen


def _child(args: argparse.Namespace, workers: int, mode: str, listing: Path, rows: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--workers", str(workers), "--images", str(listing),
           "--rows", str(rows), "--batch-size", str(args.batch_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} x {workers} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cli(folder: Path, n: int, rows: Path, batch_size: int) -> dict:
    """``osteopano measure`` end to end; CPU summed over its process tree (sampled every 50 ms)."""
    cmd = [sys.executable, "-m", "osteopano", "measure", str(folder), "--out", str(rows),
           "--batch-size", str(batch_size)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid)
    proc.wait()
    seconds = time.perf_counter() - start
    seen = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"osteopano measure failed:\n{proc.stderr.read().decode(errors='replace')[-2000:]}")
    return {"n": n, "seconds": seconds, "cpu_seconds": sum(seen.values()), "errors": None}


def _images(args: argparse.Namespace, tmp: Path) -> tuple[list[Path], str]:
    return bench_images(args.images, args.n, tmp, default_n=30, width=2943)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, action="append", help="Image folder (repeatable).")
    parser.add_argument("--n", type=int, default=30, help="At most this many images (0 = all).")
    parser.add_argument("--workers", default="1,2", help="Comma list of staging workers.")
    parser.add_argument("--modes", default="threads,processes", help="Comma list of threads, processes.")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-cli", action="store_true", help="Skip the end-to-end `osteopano measure` run.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.images = args.images[0]
        args.workers = int(args.workers)
        _worker(args)
        return

    from rich.console import Console
    from rich.table import Table

    results: list[tuple[str, dict, bool | None]] = []
    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp_name:
        tmp = Path(tmp_name)
        paths, described = _images(args, tmp)
        listing = tmp / "images.txt"
        listing.write_text("\n".join(str(p) for p in paths))
        first_rows: str | None = None
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
        # one worker is inline whatever the mode: run it once, first, as the rows' reference
        configs = [(1, modes[0])] * (1 in counts) + [(w, m) for w in counts if w != 1 for m in modes]
        for workers, mode in configs:
            rows = tmp / f"rows-{mode}-{workers}.jsonl"
            res = _child(args, workers, mode, listing, rows)
            text = rows.read_text()
            same = None if first_rows is None else text == first_rows
            first_rows = text if first_rows is None else first_rows
            results.append((f"{'inline' if workers == 1 else mode} x {workers}", res, same))
        if not args.no_cli:
            folder = tmp / "cli-images"
            folder.mkdir()
            for i, p in enumerate(paths):
                (folder / f"{i:05d}{p.suffix.lower()}").symlink_to(p)
            results.append(("measure CLI (end to end)", _cli(folder, len(paths), tmp / "cli.jsonl",
                                                            args.batch_size), None))
    load = os.getloadavg()
    table = Table(title=f"osteopano measure, {described}; batch {args.batch_size}; {os.cpu_count()} CPUs, "
                        f"load average {load[0]:.1f}/{load[1]:.1f}")
    for col in ("staging", "images/s", "CPU ms/image", "CPU %", "errors", "rows = first"):
        table.add_column(col, justify="right")
    out = {}
    for name, res, same in results:
        rate, cpu_ms = res["n"] / res["seconds"], 1000 * res["cpu_seconds"] / res["n"]
        share = 100 * res["cpu_seconds"] / res["seconds"]
        table.add_row(name, f"{rate:.2f}", f"{cpu_ms:.0f}", f"{share:.0f}",
                      "" if res["errors"] is None else str(res["errors"]), "" if same is None else str(same))
        out[name] = {"images_per_s": round(rate, 2), "cpu_ms_per_image": round(cpu_ms, 1), "cpu_percent": round(share),
                     "rows_identical_to_first": same}
    Console().print(table)
    print(json.dumps({"images": described, "load_average": load, "runs": out}))


if __name__ == "__main__":
    main()
