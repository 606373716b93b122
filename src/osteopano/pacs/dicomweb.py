"""``osteopano pacs pull``: screen a PACS's panoramic images over DICOMweb and store the results back.

QIDO-RS finds the instances (``Modality``, ``StudyDate`` from ``--since``), WADO-RS retrieves each
one, it is screened (:mod:`osteopano.pacs.screening`), and STOW-RS stores its SR and Secondary
Capture into the same study. A JSON state file records each source instance's outcome after every
image, so a rerun (after a stop, a crash, new images) continues where it stopped. Nothing is sent
twice: the outputs' UIDs derive from the source's, and before storing, the server is asked whether
they are there already (so even a lost state file does not make duplicates). The state holds DICOM
UIDs and outcomes only, no patient data.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from osteopano.errors import OsteopanoError

log = logging.getLogger("osteopano.pacs")

STATE_FORMAT = "osteopano-pacs-pull/1"
_SOP_INSTANCE, _SERIES, _STUDY, _SOP_CLASS, _MODALITY = "00080018", "0020000E", "0020000D", "00080016", "00080060"
DONE = ("sent", "skipped", "error")
HTTP_ATTEMPTS = 3


@dataclass
class PullSummary:
    """What a pull did: instances found, screened and sent, skipped, failed, done before."""

    found: int = 0
    sent: int = 0
    skipped: int = 0
    errors: int = 0
    already: int = 0
    on_server: int = 0  # screened, but the server had the results already (e.g. the state was lost)
    left: int = 0  # not processed because of --limit
    lines: list[str] = field(default_factory=list)


def since_filter(since: str | None) -> str | None:
    """``--since`` (YYYY-MM-DD or YYYYMMDD) as a DICOM StudyDate range ``YYYYMMDD-``."""
    if not since:
        return None
    text = since.replace("-", "")
    if not re.fullmatch(r"\d{8}", text):
        raise OsteopanoError(f"--since {since!r}: expected a date as YYYY-MM-DD")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise OsteopanoError(f"--since {since!r}: not a valid date") from None
    return f"{text}-"


class PullState:
    """The JSON state file: per source SOP Instance UID, its outcome (atomic rewrite on each change)."""

    def __init__(self, path: Path, url: str):
        self.path, self.url = path, url
        self.instances: dict[str, dict[str, Any]] = {}
        if path.exists():
            data = _read_state(path)
            if data.get("format") != STATE_FORMAT:
                raise OsteopanoError(f"{path}: not an osteopano pull state file")
            if data.get("url") != url:
                raise OsteopanoError(f"{path}: state of a pull from {data.get('url')}, not {url}; "
                                     "use another --state file")
            self.instances = dict(data.get("instances") or {})

    def status(self, uid: str) -> str | None:
        return (self.instances.get(uid) or {}).get("status")

    def record(self, uid: str, status: str, **extra: Any) -> None:
        self.instances[uid] = {"status": status, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               **extra}
        self.save()

    def save(self) -> None:
        from osteopano.io.files import atomic_write_json

        atomic_write_json(self.path, {"format": STATE_FORMAT, "url": self.url, "instances": self.instances})


def _read_state(path: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OsteopanoError(f"{path}: unreadable state file ({exc})") from exc


def connect(url: str, user: str | None = None, password: str | None = None, timeout: float = 60) -> Any:
    """A DICOMweb client for ``url`` (HTTP basic auth when ``user`` is given)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    if not re.match(r"https?://", url):
        raise OsteopanoError(f"{url}: a DICOMweb URL starts with http:// or https://")
    session = requests.Session()
    if user:
        session.auth = (user, password or "")
    client = DICOMwebClient(url.rstrip("/"), session=session, timeout=timeout)
    # Retry a busy or unreachable server a little (0.5 s, then 1 s), not the library's 30 s.
    client.set_http_retry_params(max_attempts=HTTP_ATTEMPTS, wait_exponential_multiplier=250)
    return client


def pull(url: str, *, state_path: Path, modality: str | None = "PX", since: str | None = None,
         screen: Callable[[Any], Any], limit: int | None = None, user: str | None = None,
         password: str | None = None, out_dir: Path | None = None, fhir_dir: Path | None = None,
         client: Any = None) -> PullSummary:
    """Screen every matching instance not done before and store its SR + SC back; see the module doc.

    ``screen(ds)`` returns a :class:`~osteopano.pacs.screening.ScreenOutcome`. Network and server
    errors stop the pull with an OsteopanoError (what was done stays in the state); an image that
    cannot be screened is recorded as an error and the pull goes on.
    """
    import requests

    from osteopano.pacs.screening import describe, save_outputs, skip_reason

    state = PullState(state_path, url)
    client = client or connect(url, user, password)
    summary = PullSummary()
    try:
        found = find_instances(client, modality=modality, since=since)
        summary.found = len(found)
        todo = [f for f in found if state.status(f[2]) not in DONE]
        summary.already = summary.found - len(todo)
        if limit is not None:
            summary.left, todo = max(0, len(todo) - limit), todo[:limit]
        for k, (study, series, sop) in enumerate(todo, 1):
            tag = f"[{k}/{len(todo)}] {sop}"
            try:
                ds = client.retrieve_instance(study, series, sop)
                reason = skip_reason(ds, modality)
                if reason:
                    state.record(sop, "skipped", reason=reason)
                    summary.skipped += 1
                    _say(summary, f"{tag}: skipped ({reason})")
                    continue
                outcome = screen(ds)
                outputs = outcome.outputs(ds)
            except requests.exceptions.RequestException:
                raise
            except Exception as exc:  # this image only: unreadable, odd attributes; the pull goes on
                reason = str(exc) if isinstance(exc, OsteopanoError) else _unexpected(exc)
                state.record(sop, "error", reason=reason)
                summary.errors += 1
                _say(summary, f"{tag}: not screened ({reason})")
                continue
            uids = [str(o.SOPInstanceUID) for o in outputs]
            state.record(sop, "sending", outputs=uids)
            missing = [o for o in outputs if not _on_server(client, study, str(o.SOPInstanceUID))]
            if missing:
                _store(client, missing, study)
            state.record(sop, "sent", outputs=uids, quality=outcome.measurement.quality)
            if missing:
                summary.sent += 1
            else:
                summary.on_server += 1
            save_outputs(ds, outcome, out_dir, fhir_dir)
            done = ("stored SR + SC" if len(missing) == len(outputs) else
                    "SR + SC already on the server" if not missing else
                    f"stored {len(missing)} of {len(outputs)} (the others were on the server)")
            _say(summary, f"{tag}: {done}; {describe(outcome)}")
    except requests.exceptions.RequestException as exc:
        raise OsteopanoError(f"{url}: {_http_reason(exc)} (progress kept in {state_path})") from exc
    return summary


def find_instances(client: Any, *, modality: str | None, since: str | None) -> list[tuple[str, str, str]]:
    """(study, series, instance) UIDs of the matching instances, in the server's order, no repeats."""
    filters: dict[str, str] = {}
    if modality:
        filters["Modality"] = modality
    if (dates := since_filter(since)) is not None:
        filters["StudyDate"] = dates
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for item in client.search_for_instances(search_filters=filters or None, get_remaining=True):
        try:
            uids = tuple(str(item[t]["Value"][0]) for t in (_STUDY, _SERIES, _SOP_INSTANCE))
        except (KeyError, IndexError):
            continue  # a server answer without the UIDs cannot be retrieved
        if uids[2] not in seen:
            seen.add(uids[2])
            found.append(uids)  # type: ignore[arg-type]
    return found


def _on_server(client: Any, study: str, sop: str) -> bool:
    return bool(client.search_for_instances(study_instance_uid=study, search_filters={"SOPInstanceUID": sop}))


def _store(client: Any, datasets: list[Any], study: str) -> None:
    response = client.store_instances(datasets, study_instance_uid=study)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        raise OsteopanoError(f"server refused {len(failed)} of {len(datasets)} objects "
                             f"(failure reason {', '.join(reasons)})")


def _unexpected(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _say(summary: PullSummary, line: str) -> None:
    summary.lines.append(line)
    log.info(line)


def _http_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot reach the server ({text[:200]})"
