"""Finished reports in memory, keyed by a random token; each file is handed out once."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

REPORT_TTL_S = 15 * 60           # a report waits this long for its download
REPORT_MAX_ITEMS = 64            # ... and at most this many results are kept (oldest dropped)


class ReportStore:
    """Entries expire after ``ttl_s`` seconds; past ``max_items`` the oldest is dropped, so the store
    never grows without bound. Nothing is written to disk."""

    def __init__(self, ttl_s: float = REPORT_TTL_S, max_items: int = REPORT_MAX_ITEMS):
        self.ttl_s, self.max_items = ttl_s, max_items
        self._items: OrderedDict[str, tuple[float, dict[str, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, files: dict[str, bytes]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._purge()
            self._items[token] = (time.monotonic() + self.ttl_s, dict(files))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return token

    def take(self, token: str, fmt: str) -> bytes | None:
        """The file once; None when unknown, expired or already downloaded."""
        with self._lock:
            self._purge()
            entry = self._items.get(token)
            if entry is None:
                return None
            data = entry[1].pop(fmt, None)
            if not entry[1]:
                del self._items[token]
            return data

    def __len__(self) -> int:
        with self._lock:
            self._purge()
            return len(self._items)

    def _purge(self) -> None:
        now = time.monotonic()
        for token in [t for t, (expiry, _) in self._items.items() if expiry <= now]:
            del self._items[token]
