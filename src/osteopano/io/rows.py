"""Result rows, appended to FILE.csv or FILE.jsonl as they come, durably; and read back for ``--resume``.

``RowWriter`` writes the header once, flushes and fsyncs after every batch (a crash loses at most the
batch in flight), cuts a torn last line when resuming, and refuses to append to a file whose columns
differ from this run's. CSV cells that a spreadsheet would run as a formula (starting with
``= + - @``, tab or CR) are prefixed with ``'``. ``previous_rows`` reads an output back for ``--resume``:
rows with an ``error`` are screened again, the others are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from osteopano.errors import DataError

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SUFFIXES = (".csv", ".jsonl")


def check_output_file(path: Path, option: str = "--out") -> None:
    """DataError (one line) unless ``path`` can be an output file: .csv/.jsonl, not a folder, parent exists."""
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: {option} must end in .csv or .jsonl")
    if path.is_dir():
        raise DataError(f"{path}: {option} is a folder; give a file name ending in .csv or .jsonl")
    if not path.parent.is_dir():
        raise DataError(f"{path}: {option}'s folder {path.parent} does not exist")


def escape_cell(value: Any) -> Any:
    """A CSV-safe cell: None -> '', a formula-like string gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class RowWriter:
    """Append rows with exactly ``columns`` to FILE.csv or FILE.jsonl, durably after every batch.

    With ``resume`` an existing file is kept (a torn last line is cut off); its header must equal
    ``columns`` (CSV) or DataError says how to proceed. Without ``resume`` an existing file is replaced.
    """

    def __init__(self, path: Path, columns: list[str] | tuple[str, ...], *, resume: bool = False,
                 drop: set[str] = frozenset()):
        check_output_file(path)
        self.path, self.jsonl, self.columns = path, path.suffix.lower() == ".jsonl", list(columns)
        existing = resume and path.exists() and path.stat().st_size > 0
        if existing:
            _cut_torn_line(path)
            found = _header(path)
            if found is not None and found != self.columns:
                raise DataError(f"{path}: its columns differ from this run's ({_diff(found, self.columns)}); "
                                "resume with the same options, or write to a new --out")
            if drop:
                _drop_rows(path, drop)
        self._fh = path.open("a" if existing else "w", newline="", encoding="utf-8")
        if not existing and not self.jsonl:
            self._write_csv([], header=True)
            self._sync()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` (keys outside ``columns`` are dropped) and make them durable (flush + fsync)."""
        if self.jsonl:
            for row in rows:
                self._fh.write(json.dumps(row, default=_json_default) + "\n")
        else:
            self._write_csv(rows)
        self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _write_csv(self, rows: list[dict[str, Any]], header: bool = False) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", restval="",
                                lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows({k: escape_cell(v) for k, v in r.items()} for r in rows)
        self._fh.write(buf.getvalue())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_rows(path: Path, drop: set[str]) -> None:
    """Rewrite ``path`` (atomically) without the rows whose ``path`` is in ``drop`` (to be screened again)."""
    from osteopano.io.files import atomic_write_text

    with path.open(newline="", encoding="utf-8") as fh:
        lines = fh.readlines()
    if path.suffix.lower() == ".jsonl":
        keep = [ln for ln in lines if _json_path(ln) not in drop]
    else:
        keep = lines[:1] + [ln for ln, row in zip(lines[1:], csv.DictReader(lines)) if row.get("path") not in drop]
    atomic_write_text(path, "".join(keep))


def _json_path(line: str) -> str | None:
    try:
        return json.loads(line).get("path")
    except (ValueError, AttributeError):
        return None


def _header(path: Path) -> list[str] | None:
    """The CSV header, or for JSONL the keys of the first row; None when there is none."""
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".jsonl":
            for line in fh:
                try:
                    return list(json.loads(line))
                except ValueError:
                    return None
            return None
        header = next(csv.reader(fh), None)
    if header is not None and "path" not in header:
        raise DataError(f"{path}: not an osteopano output (no 'path' column); choose another --out or drop --resume")
    return header


def _diff(found: list[str], wanted: list[str]) -> str:
    missing = [c for c in wanted if c not in found]
    extra = [c for c in found if c not in wanted]
    parts = ([f"missing {', '.join(missing[:4])}"] if missing else []) + ([f"extra {', '.join(extra[:4])}"] if extra
                                                                          else [])
    return "; ".join(parts) or "column order differs"


def _cut_torn_line(path: Path) -> None:
    """Drop a last line without its newline (a run killed mid-write), so appending stays well-formed."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def previous_rows(path: Path) -> tuple[set[str], set[str]]:
    """For ``--resume``: (paths done without an error, paths whose row had an error) in an output file."""
    done: set[str] = set()
    failed: set[str] = set()
    if not path.exists():
        return done, failed
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix.lower() == ".jsonl":
            rows = []
            for line in fh:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue  # a torn last line
        else:
            rows = list(csv.DictReader(fh))
    for row in rows:
        p = row.get("path") if isinstance(row, dict) else None
        if not p:
            continue
        (failed if row.get("error") else done).add(p)
    return done, failed - done
