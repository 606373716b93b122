"""PACS in and out against a real Orthanc (tests/orthanc.py), on SYNTHETIC phantom DICOMs.

DICOMweb: phantoms are uploaded by STOW-RS, ``osteopano pacs pull`` screens them and the SR and
Secondary Capture must arrive in each source's study, referencing the source instance, once.
DIMSE: ``osteopano pacs listen`` runs as its own process; a phantom C-STOREd to it must come out
in Orthanc as SR + SC. Everything listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from orthanc import Orthanc, free_port
from screen_support import run_cli

from osteopano.pacs import dicomweb

LISTENER_AE = "OSTEOPANO"
SRC = Path(__file__).resolve().parents[1] / "src"
STUDY_DATES = ["20240101", "20260115", "20260301", "20260302"]  # the last is for the listener test
WAIT_S = 60


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> list[pydicom.Dataset]:
    from osteopano.phantom.generate import generate

    out = tmp_path_factory.mktemp("pacs-phantoms")
    generate(out, len(STUDY_DATES), 3, fmt="dicom", width=1000, progress=False, workers=1)
    datasets = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    for ds, date in zip(datasets, STUDY_DATES, strict=True):
        ds.StudyDate = date
        ds.PatientName = "Doe^Jane"  # must never appear in a log line
    return datasets


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = Orthanc(tmp_path_factory.mktemp("orthanc"), modalities={LISTENER_AE: free_port()})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def uploaded(orthanc, phantoms) -> list[pydicom.Dataset]:
    client = dicomweb.connect(orthanc.dicomweb)
    sources = phantoms[:3]
    client.store_instances(sources)
    assert len(orthanc.get("/instances")) == 3
    return sources


def _in_study(orthanc: Orthanc, study_uid: str) -> list[dict]:
    return [t for t in orthanc.instances() if t["StudyInstanceUID"] == study_uid]


def _check_results(orthanc: Orthanc, source: pydicom.Dataset) -> None:
    """Exactly one SR and one SC in the source's study, each referencing the source instance."""
    client = dicomweb.connect(orthanc.dicomweb)
    study = _in_study(orthanc, source.StudyInstanceUID)
    by_modality = {m: [t for t in study if t["Modality"] == m] for m in ("SR", "OT")}
    assert len(by_modality["SR"]) == 1 and len(by_modality["OT"]) == 1, [t["Modality"] for t in study]
    sr_tags, sc_tags = by_modality["SR"][0], by_modality["OT"][0]
    assert sr_tags["SeriesInstanceUID"] != source.SeriesInstanceUID != sc_tags["SeriesInstanceUID"]
    sr = client.retrieve_instance(source.StudyInstanceUID, sr_tags["SeriesInstanceUID"], sr_tags["SOPInstanceUID"])
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    refs = set()

    def walk(items):
        for item in items:
            for ref in item.get("ReferencedSOPSequence", []):
                refs.add(ref.ReferencedSOPInstanceUID)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert refs == {source.SOPInstanceUID}  # the SCOORD sites are on the source image
    sc = client.retrieve_instance(source.StudyInstanceUID, sc_tags["SeriesInstanceUID"], sc_tags["SOPInstanceUID"])
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.pixel_array.shape == (source.Rows, source.Columns, 3)


def test_pull_screens_stores_back_and_continues(orthanc, uploaded, tmp_path, monkeypatch, capsys):
    state = tmp_path / "state.json"
    args = ["pacs", "pull", orthanc.dicomweb, "--since", "2026-01-01", "--state", str(state)]
    code, out, err = run_cli(monkeypatch, capsys, *args, "--limit", "1")
    assert code == 0, err
    assert "2 matching instances: 1 screened and stored" in out and "1 left for the next run" in out
    code, out, err = run_cli(monkeypatch, capsys, *args, "--fhir-out", str(tmp_path / "fhir"))
    assert code == 0, err
    assert "1 screened and stored" in out and "1 done before" in out
    assert len(list((tmp_path / "fhir").glob("*_fhir.json"))) == 1
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert "0 screened and stored" in out and "2 done before" in out

    for source in uploaded[1:]:
        _check_results(orthanc, source)
    old = _in_study(orthanc, uploaded[0].StudyInstanceUID)  # 2024: before --since
    assert [t["Modality"] for t in old] == ["PX"]
    assert "Doe" not in out + err

    # A lost state file does not make duplicates: the server already has the outputs.
    state.unlink()
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "0 screened and stored" in out and "2 with results already on the server" in out
    assert err.count(": SR + SC already on the server; MCW ") == 2
    for source in uploaded[1:]:
        _check_results(orthanc, source)

    # A crash between the SR and the SC (here: the SC deleted, the state lost): only the SC is sent.
    [sc] = [t for t in _in_study(orthanc, uploaded[1].StudyInstanceUID) if t["Modality"] == "OT"]
    orthanc.delete(f"/instances/{orthanc.find_instance(sc['SOPInstanceUID'])}")
    state.unlink()
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    assert err.count("stored 1 of 2 (the others were on the server)") == 1
    assert "1 screened and stored" in out and "1 with results already on the server" in out
    for source in uploaded[1:]:
        _check_results(orthanc, source)

    # Our own SR/SC are never screened (modality 'any' sees them): recorded as skipped.
    code, out, err = run_cli(monkeypatch, capsys, "pacs", "pull", orthanc.dicomweb, "--modality", "any",
                             "--state", str(tmp_path / "any.json"))
    assert code == 0, err
    assert "7 matching instances: 1 screened and stored, 4 skipped" in out  # 3 PX + 2 SR + 2 SC
    assert "2 with results already on the server" in out
    _check_results(orthanc, uploaded[0])


def test_pull_bad_server_or_state_is_one_line(orthanc, tmp_path, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    code, out, err = run_cli(monkeypatch, capsys, "pacs", "pull", dead, "--state", str(tmp_path / "s.json"))
    assert code == 2 and err.startswith("error: ") and "cannot reach the server" in err
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "other.json").write_text('{"format": "osteopano-pacs-pull/1", "url": "http://x", "instances": {}}')
    code, out, err = run_cli(monkeypatch, capsys, "pacs", "pull", orthanc.dicomweb, "--state",
                             str(tmp_path / "other.json"))
    assert code == 2 and "state of a pull from http://x" in err
    code, out, err = run_cli(monkeypatch, capsys, "pacs", "pull", orthanc.dicomweb, "--since", "2026-13-40",
                             "--state", str(tmp_path / "s2.json"))
    assert code == 2 and "not a valid date" in err


def _echo(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def _c_store(port: int, datasets: list[pydicom.Dataset]) -> list[int]:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    for sop_class in {str(d.SOPClassUID) for d in datasets}:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()


def test_listen_screens_and_forwards_to_orthanc(orthanc, phantoms, tmp_path):
    source = phantoms[3]
    other = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_to_bytes(source)))
    other.Modality = "CT"
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    port = free_port()
    log_path = tmp_path / "listen.log"
    proc = _listen(port, f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", log_path)
    try:
        deadline = time.monotonic() + WAIT_S
        while not _echo(port):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "listener did not start"
            time.sleep(0.3)
        assert _c_store(port, [source, other]) == [0, 0]
        while True:
            study = _in_study(orthanc, source.StudyInstanceUID)
            if {"SR", "OT"} <= {t["Modality"] for t in study}:
                break
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"no SR + SC in Orthanc:\n{log_path.read_text()}"
            time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    _check_results(orthanc, source)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert f"received {source.SOPInstanceUID} (PX) from TESTSCU@127.0.0.1" in text
    assert f"skipped {other.SOPInstanceUID}: modality CT, not PX" in text
    assert f"screened {source.SOPInstanceUID}: MCW " in text
    assert f"to {orthanc.aet}@127.0.0.1:{orthanc.dicom_port}" in text
    assert "Doe" not in text and "Jane" not in text


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_listener_queue_is_bounded(phantoms, tmp_path):
    """With the worker busy, a full queue answers 0xA700 (out of resources) instead of growing."""
    from osteopano.pacs.listener import STATUS_OUT_OF_RESOURCES, Listener
    from osteopano.pacs.screening import screen_dataset

    release = threading.Event()

    def slow_screen(ds):
        release.wait(WAIT_S)
        return screen_dataset(ds)

    port = free_port()
    listener = Listener(port=port, ae_title=LISTENER_AE, screen=slow_screen, out_dir=tmp_path / "out",
                        queue_size=1)
    listener.start()
    try:
        first = _c_store(port, [phantoms[0]])
        deadline = time.monotonic() + WAIT_S
        while listener.queue.qsize() and time.monotonic() < deadline:  # the worker took it and waits
            time.sleep(0.05)
        statuses = first + _c_store(port, [phantoms[1], phantoms[2]])
        assert statuses == [0, 0, STATUS_OUT_OF_RESOURCES]
        release.set()
        assert listener.wait_idle(WAIT_S)
    finally:
        release.set()
        listener.stop()
    assert listener.counts["received"] == 2 and listener.counts["refused"] == 1
    assert len(list((tmp_path / "out").glob("*_sr.dcm"))) == 2 and len(list((tmp_path / "out").glob("*_sc.dcm"))) == 2


@pytest.mark.slow
def test_pull_with_a_model_adds_its_score(run, phantoms, tmp_path, monkeypatch, capsys):
    """``--model RUN`` (the tiny SYNTHETIC run): the stored SR carries the model's score and threshold."""
    server = Orthanc(tmp_path / "orthanc")
    try:
        client = dicomweb.connect(server.dicomweb)
        client.store_instances([phantoms[0]])
        code, out, err = run_cli(monkeypatch, capsys, "pacs", "pull", server.dicomweb, "--model", str(run),
                                 "--state", str(tmp_path / "s.json"))
        assert code == 0, err
        assert "1 screened and stored" in out and "model score " in err
        [sr_tags] = [t for t in server.instances() if t["Modality"] == "SR"]
        sr = client.retrieve_instance(sr_tags["StudyInstanceUID"], sr_tags["SeriesInstanceUID"],
                                      sr_tags["SOPInstanceUID"])
        names = set()

        def walk(items):
            for item in items:
                names.add(item.ConceptNameCodeSequence[0].CodeValue)
                walk(item.get("ContentSequence", []))

        walk(sr.ContentSequence)
        assert {"model-score", "model-threshold", "model-positive"} <= names
    finally:
        server.stop()


def test_listener_refuses_a_wrong_called_ae_title(phantoms, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from osteopano.pacs.listener import Listener
    from osteopano.pacs.screening import screen_dataset

    port = free_port()
    listener = Listener(port=port, ae_title=LISTENER_AE, screen=screen_dataset, out_dir=tmp_path)
    listener.start()
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="SOMEONEELSE")
        assert assoc.is_rejected
        assert _echo(port)  # the right AE title is served
    finally:
        listener.stop()


@pytest.mark.parametrize("text, expected", [
    ("ORTHANC@127.0.0.1:4242", ("ORTHANC", "127.0.0.1", 4242)),
    ("PACS MAIN@pacs.local:104", ("PACS MAIN", "pacs.local", 104)),
    ("A@[::1]:11112", ("A", "::1", 11112)),
])
def test_parse_destination(text, expected):
    from osteopano.pacs.listener import parse_destination

    d = parse_destination(text)
    assert (d.ae_title, d.host, d.port) == expected and str(d).startswith(expected[0] + "@")


@pytest.mark.parametrize("text, problem", [
    ("ORTHANC@host", "expected AE@HOST:PORT"), ("127.0.0.1:4242", "expected AE@HOST:PORT"),
    ("ORTHANC@host:0", "not 1-65535"), ("WAY_TOO_LONG_AE_TITLE@h:1", "1-16 printable"),
])
def test_parse_destination_errors(text, problem):
    from osteopano.errors import OsteopanoError
    from osteopano.pacs.listener import parse_destination

    with pytest.raises(OsteopanoError, match=problem):
        parse_destination(text)


def test_since_filter():
    from osteopano.errors import OsteopanoError

    assert dicomweb.since_filter("2026-01-31") == "20260131-" == dicomweb.since_filter("20260131")
    assert dicomweb.since_filter(None) is None
    for bad in ("2026-02-30", "yesterday", "2026-1-1"):
        with pytest.raises(OsteopanoError):
            dicomweb.since_filter(bad)


def _listen(port: int, forward: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "osteopano", "pacs", "listen", "--port", str(port), "--ae-title", LISTENER_AE,
           "--bind", "127.0.0.1", "--forward", forward]
    with log_path.open("wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_documented_orthanc_auto_routing(phantoms, tmp_path):
    """docs/clinic.md's Lua script: Orthanc sends each new PX image to the listener, which sends the
    SR + SC back to the same Orthanc; they must not be routed round again."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "clinic.md").read_text()
    lua = tmp_path / "osteopano.lua"
    lua.write_text(doc.split("```lua\n", 1)[1].split("```", 1)[0])
    port = free_port()
    server = Orthanc(tmp_path / "orthanc", modalities={LISTENER_AE: port}, lua_scripts=[lua])
    log_path = tmp_path / "listen.log"
    proc = _listen(port, f"{server.aet}@127.0.0.1:{server.dicom_port}", log_path)
    source = phantoms[2]
    try:
        deadline = time.monotonic() + WAIT_S
        while not _echo(port):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)
        dicomweb.connect(server.dicomweb).store_instances([source])
        while {"SR", "OT"} - {t["Modality"] for t in server.instances()}:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"no SR + SC routed back:\n{log_path.read_text()}"
            time.sleep(0.3)
        time.sleep(1.0)  # anything routed round again would show up now
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        server_instances = server.instances()
        server.stop()
    assert sorted(t["Modality"] for t in server_instances) == ["OT", "PX", "SR"]
    text = log_path.read_text()
    assert text.count(" INFO received ") == 1 and f"(PX) from {server.aet}@127.0.0.1" in text


def test_command_logging_follows_the_current_stderr(monkeypatch):
    """The log handler `pacs` installs writes to sys.stderr as it is when a record is emitted: a stream that
    was stderr at set-up and has since been closed (an embedding app's, a test's capture) gives no
    '--- Logging error ---' traceback."""
    import io
    import logging
    import sys

    from osteopano.commands.pacs import _logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    _logging(verbose=False)
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("osteopano.test").info("after the first stream closed")
    assert "after the first stream closed" in second.getvalue()
    assert "Logging error" not in second.getvalue()
