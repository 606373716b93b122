"""What ``predict`` and ``measure`` share on the command line: the progress bar and the summary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from osteopano.errors import DataError


def drive(batches: Iterator[list], total: int, label: str, console) -> tuple[list[dict], int, int]:
    """Run ``batches`` under a Rich progress bar; returns (rows, n without error, n with an error)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    rows: list[dict] = []
    n_ok = n_err = 0
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("", total=total)
        for batch in batches:
            for item in batch:
                rows.append(item.row)
                if item.row.get("error"):
                    n_err += 1
                else:
                    n_ok += 1
            progress.advance(task, len(batch))
    return rows, n_ok, n_err


def summary(console, n_ok: int, n_err: int, out: Path | None, plan, verb: str) -> None:
    """One closing line (and, for --resume, what was skipped and retried); DataError when nothing worked."""
    from rich.markup import escape

    extra = ""
    if plan.skipped_done:
        extra += f"; {plan.skipped_done} done before, skipped"
    if plan.retried:
        extra += f"; {len(plan.retried)} that had failed before, retried"
    console.print(escape(f"{n_ok} image(s) {verb}, {n_err} with an error" + (f"; rows in {out}" if out else "")
                         + extra), soft_wrap=True)
    if n_ok == 0 and n_err and not plan.skipped_done:
        raise DataError(f"none of the {n_err} input files could be {verb}")
