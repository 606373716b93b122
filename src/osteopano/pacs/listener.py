"""``osteopano pacs listen``: a DICOM C-STORE receiver (pynetdicom) that screens each panoramic image
it receives and sends the SR and Secondary Capture on to a destination (C-STORE to ``--forward``)
and/or writes them to a folder.

Received datasets wait in a bounded queue for one worker thread; when the queue is full the
receiver answers C-STORE status 0xA700 (out of resources), so the sender retries later instead
of the listener running out of memory. Log lines name instances by their SOP Instance UID and
senders by AE title and address, never the patient; pynetdicom's own (dataset-dumping) debug
logging is kept at WARNING.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osteopano.errors import OsteopanoError

log = logging.getLogger("osteopano.pacs")

STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
FORWARD_ATTEMPTS = 3
FORWARD_RETRY_S = 2.0
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash


@dataclass(frozen=True)
class Destination:
    """Where results go by C-STORE: ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """``AE@HOST:PORT`` -> Destination; OsteopanoError naming the problem."""
    m = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@]+):(\d+)", text.strip())
    if not m:
        raise OsteopanoError(f"--forward {text!r}: expected AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
    ae, host, port = m.group(1).strip(), m.group(2).strip("[]"), int(m.group(3))
    check_ae_title(ae, "--forward")
    if not 0 < port < 65536:
        raise OsteopanoError(f"--forward {text!r}: port {port} is not 1-65535")
    return Destination(ae, host, port)


def check_ae_title(ae: str, what: str = "--ae-title") -> str:
    if not _AE_RE.fullmatch(ae) or not ae.strip():
        raise OsteopanoError(f"{what} {ae!r}: an AE title is 1-16 printable characters without '\\'")
    return ae


class Listener:
    """The receiver: ``start()`` (non-blocking), ``stop()``, ``wait_idle()``; ``counts`` per outcome."""

    def __init__(self, *, port: int, ae_title: str, screen: Callable[[Any], Any], bind: str = "127.0.0.1",
                 forward: Destination | None = None, out_dir: Path | None = None, fhir_dir: Path | None = None,
                 modality: str | None = "PX", queue_size: int = 16):
        if forward is None and out_dir is None:
            raise OsteopanoError("nothing to do with the results: give --forward AE@HOST:PORT and/or --out DIR")
        if queue_size < 1:
            raise OsteopanoError(f"--queue {queue_size}: must be at least 1")
        self.port, self.ae_title, self.bind = port, check_ae_title(ae_title), bind
        self.screen, self.forward, self.out_dir, self.fhir_dir = screen, forward, out_dir, fhir_dir
        self.modality = modality
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.counts = {"received": 0, "refused": 0, "skipped": 0, "errors": 0, "forwarded": 0,
                       "forward_failed": 0, "written": 0}
        self._server: Any = None
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True  # a sender configured for another AE title is refused, not served
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: STATUS_OK)]
        try:
            self._server = ae.start_server((self.bind, self.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise OsteopanoError(f"cannot listen on {self.bind}:{self.port}: {exc.strerror or exc}") from exc
        self._worker = threading.Thread(target=self._work, name="osteopano-screen", daemon=True)
        self._worker.start()
        where = f", forwarding to {self.forward}" if self.forward else ""
        log.info(f"listening as {self.ae_title} on {self.bind}:{self.port}{where}; queue {self.queue.maxsize}")

    def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop receiving, finish what is queued (up to ``drain_timeout_s``), stop the worker."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.wait_idle(drain_timeout_s)
        self._stopping.set()
        if self._worker is not None:
            self._worker.join(timeout=5)
        log.info("stopped: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every received dataset has been processed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.queue.unfinished_tasks

    # ------------------------------------------------------------------ receiving

    def _on_store(self, event: Any) -> int:
        sender = f"{event.assoc.requestor.ae_title}@{event.assoc.requestor.address}"
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:  # the sender's data cannot be decoded
            self.counts["errors"] += 1
            log.error(f"cannot decode a dataset from {sender}: {type(exc).__name__}")
            return STATUS_CANNOT_UNDERSTAND
        uid = str(ds.get("SOPInstanceUID", "?"))
        try:
            self.queue.put_nowait((ds, sender))
        except queue.Full:
            self.counts["refused"] += 1
            log.warning(f"refused {uid} from {sender}: queue full ({self.queue.maxsize}), sender should retry")
            return STATUS_OUT_OF_RESOURCES
        self.counts["received"] += 1
        log.info(f"received {uid} ({ds.get('Modality', '?')}) from {sender}; queue {self.queue.qsize()}"
                 f"/{self.queue.maxsize}")
        return STATUS_OK

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                ds, sender = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._process(ds)
            except Exception as exc:  # never let one image stop the receiver
                self.counts["errors"] += 1
                log.error(f"{ds.get('SOPInstanceUID', '?')}: unexpected error {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}")
            finally:
                self.queue.task_done()

    def _process(self, ds: Any) -> None:
        from osteopano.pacs.screening import describe, save_outputs, skip_reason

        uid = str(ds.get("SOPInstanceUID", "?"))
        reason = skip_reason(ds, self.modality)
        if reason:
            self.counts["skipped"] += 1
            log.info(f"skipped {uid}: {reason}")
            return
        try:
            outcome = self.screen(ds)
            outputs = outcome.outputs(ds)
        except OsteopanoError as exc:
            self.counts["errors"] += 1
            log.error(f"not screened {uid}: {exc}")
            return
        log.info(f"screened {uid}: {describe(outcome)}")
        if self.out_dir is not None or self.fhir_dir is not None:
            save_outputs(ds, outcome, self.out_dir, self.fhir_dir)
            self.counts["written"] += 1
        if self.forward is not None:
            if send(outputs, self.forward, self.ae_title):
                self.counts["forwarded"] += 1
                log.info(f"forwarded SR {outputs[0].SOPInstanceUID} and SC {outputs[1].SOPInstanceUID} "
                         f"for {uid} to {self.forward}")
            else:
                self.counts["forward_failed"] += 1


def send(datasets: list[Any], dest: Destination, calling_ae: str, attempts: int = FORWARD_ATTEMPTS) -> bool:
    """C-STORE ``datasets`` to ``dest`` in one association (retried); True when all were stored."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    problem = ""
    for attempt in range(1, attempts + 1):
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if assoc.is_established:
            try:
                statuses = [assoc.send_c_store(d) for d in datasets]
            finally:
                assoc.release()
            bad = [f"0x{int(s.Status):04X}" if s else "no answer" for s in statuses
                   if not s or int(s.Status) not in (0x0000, 0xB000, 0xB007, 0xB006)]
            if not bad:
                return True
            problem = f"status {', '.join(bad)}"
        else:
            problem = "association rejected or no answer"
        log.warning(f"forward to {dest} attempt {attempt}/{attempts} failed: {problem}")
        if attempt < attempts:
            time.sleep(FORWARD_RETRY_S)
    log.error(f"gave up forwarding to {dest}: {problem}")
    return False
