"""Load test of ``osteopano serve``: latency percentiles, throughput and errors under concurrent uploads.

    python benchmarks/serve_load.py [MODEL] [--requests 200] [--concurrency 1,16] [--workers 2]
                                    [--queue-size 32] [--width 1600] [--image PATH] [--heatmap]

Starts ``osteopano serve`` in a subprocess on a free 127.0.0.1 port (MODEL: a run folder or an
.onnx file; without one a tiny model is trained on synthetic phantoms and exported to ONNX in a
temporary folder - its speed is that of the real architecture, its predictions are meaningless),
then POSTs the same radiograph (a phantom rendered at --width, 16-bit PNG, unless --image) to
/api/v1/screen from --concurrency threads, --requests times in all, and prints p50/p95/max latency,
throughput and the count of non-200 answers. ``--concurrency 1,16`` (the default) measures one client,
then 16, against the same server (one row each). Localhost only. Exit status 1 when any request failed.

--queue-size defaults to 32 so that 16 concurrent clients are queued rather than refused: with the
server's default (workers 2 + queue 8) the 11th concurrent request gets 503 by design.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

console = Console()


def small_model(folder: Path) -> Path:
    """Synthesise 12 phantoms, train one epoch at 64 px from random weights, export ONNX; the .onnx path."""
    cli = [sys.executable, "-m", "osteopano"]
    data, run = folder / "phantoms", folder / "run"
    steps = [
        [*cli, "synth", str(data), "--n", "12", "--seed", "1", "--width", "320", "--workers", "1"],
        [*cli, "train", str(data), "--out", str(run), "--weights", "none", "--epochs", "1",
         "--image-size", "64", "--batch-size", "4", "--workers", "1"],
        [sys.executable, "-c", f"from osteopano.model.onnx import export_onnx; export_onnx({str(run)!r})"],
    ]
    for step in steps:
        console.print(f"[dim]$ {' '.join(step[1:4])} ...")
        subprocess.run(step, check=True, stdout=subprocess.DEVNULL)
    return run / "model.onnx"


def phantom_png(width: int) -> bytes:
    from osteopano.phantom.generate import render

    buf = io.BytesIO()
    Image.fromarray(render(3, width=width).pixels).save(buf, format="PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, workers: int, queue_size: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "osteopano", "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--queue-size", str(queue_size)]
    with log.open("wb") as fh:
        server = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit(f"the server did not answer /healthz within 120 s:\n{log.read_text()}")


def load_test(url: str, image: bytes, requests: int, concurrency: int) -> tuple[list[float], Counter, float]:
    """Send ``requests`` uploads from ``concurrency`` threads; (latencies of 200s, status counts, wall s)."""
    local = threading.local()

    def one(_: int) -> tuple[int | str, float]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=120)
        start = time.perf_counter()
        try:
            status: int | str = local.client.post(url, files={"file": ("phantom.png", image, "image/png")}).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return status, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return [dt for status, dt in outcomes if status == 200], Counter(status for status, _ in outcomes), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="run folder or .onnx file (default: build a tiny one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="1,16", help="concurrent clients; a comma list runs each in turn")
    parser.add_argument("--workers", type=int, default=2, help="server inference threads")
    parser.add_argument("--queue-size", type=int, default=32, help="server queue beyond the workers")
    parser.add_argument("--width", type=int, default=1600, help="width of the phantom radiograph sent")
    parser.add_argument("--image", type=Path, help="send this file instead of a phantom")
    parser.add_argument("--heatmap", action="store_true", help="ask for Grad-CAM (torch run folders only)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="osteopano-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model or small_model(tmp)
        image = args.image.read_bytes() if args.image else phantom_png(args.width)
        port = free_port()
        server = start_server(model, port, args.workers, args.queue_size, tmp / "server.log")
        url = f"http://127.0.0.1:{port}/api/v1/screen" + ("?heatmap=true" if args.heatmap else "")
        levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
        results = []
        try:
            load_test(url, image, 2, 1)  # warm-up: first-request imports and allocations
            for level in levels:
                results.append((level, *load_test(url, image, args.requests, level)))
        finally:
            server.terminate()
            server.wait(30)

    load = os.getloadavg()
    table = Table(title=f"osteopano serve load test: {args.requests} requests per row, server workers "
                        f"{args.workers} + queue {args.queue_size}, {os.cpu_count()} CPUs, load average {load[0]:.1f}")
    for col in ("model", "image", "clients", "ok", "errors", "p50 ms", "p95 ms", "max ms", "req/s"):
        table.add_column(col, justify="left" if col in ("model", "image") else "right")
    errors = 0
    for level, latencies, statuses, wall in results:
        bad = sum(n for status, n in statuses.items() if status != 200)
        errors += bad
        ms = np.asarray(latencies) * 1000
        table.add_row(
            "tiny synthetic ONNX (built)" if args.model is None else str(args.model),
            f"{len(image) / 1e6:.2f} MB" + (f" {args.image.name}" if args.image else f" phantom {args.width} px"),
            str(level), str(statuses.get(200, 0)), str(bad),
            *(f"{np.percentile(ms, q):.0f}" if len(ms) else "-" for q in (50, 95, 100)),
            f"{len(latencies) / wall:.1f}",
        )
        if bad:
            console.print(f"[red]{level} clients, non-200 answers: {dict(statuses)}")
    console.print(table)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
