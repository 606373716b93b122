"""``osteopano pacs``: screen images from a PACS and send the results back (DICOMweb pull, DIMSE listen)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from osteopano.errors import OsteopanoError

command = typer.Typer(
    help="Screen images from a PACS and store the results (DICOM SR + overlay) back. "
    "A screening aid, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
PASSWORD_ENV = "OSTEOPANO_PACS_PASSWORD"


def _screener(model: Path | None, engine: str, threshold_mm: float):
    """``screen(ds) -> ScreenOutcome`` with the model loaded once (None: measurement only)."""
    from osteopano.pacs.screening import screen_dataset
    from osteopano.screen.screener import load

    screener = load(model, engine=engine, measure=True, threshold_mm=threshold_mm)
    return lambda ds: screen_dataset(ds, screener, name=str(ds.get("SOPInstanceUID", "dataset")))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time, never to a stream captured at set-up (which may
    be closed or replaced by then, e.g. an embedding application's or a test's)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _logging(verbose: bool) -> None:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # Library loggers are chatty (highdicom: per module; pynetdicom at DEBUG dumps datasets with
    # patient names): keep them to warnings.
    for name in ("pynetdicom", "highdicom", "dicomweb_client", "urllib3"):
        logging.getLogger(name).setLevel(logging.INFO if verbose and name != "pynetdicom" else logging.WARNING)


@command.command("pull")
def pull(
    url: str = typer.Argument(..., help="The DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web"),
    since: str | None = typer.Option(None, "--since", help="Only studies from this date on (YYYY-MM-DD)."),
    modality: str = typer.Option("PX", "--modality", help="Modality to screen ('any' for all image modalities)."),
    model: Path | None = typer.Option(None, "--model", help="A run folder or .onnx model: adds its score to the "
                                      "measurement (default: measurement only)."),
    engine: str = typer.Option("auto", "--engine", help="Model engine: auto | torch | onnx."),
    state: Path = typer.Option(Path("osteopano-pull-state.json"), "--state",
                               help="State file: a rerun continues from it and never sends twice."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Screen at most N new instances this run."),
    threshold_mm: float = typer.Option(3.0, "--threshold-mm", min=0.1, help="MCW below this is flagged (mm)."),
    user: str | None = typer.Option(None, "--user", help=f"HTTP basic auth user (password from ${PASSWORD_ENV})."),
    out: Path | None = typer.Option(None, "--out", help="Also keep a copy of each SR and SC in DIR."),
    fhir_out: Path | None = typer.Option(None, "--fhir-out", help="Write a FHIR DiagnosticReport bundle per "
                                         "image into DIR."),
    verbose: bool = typer.Option(False, "--verbose", help="Log the libraries' requests too."),
) -> None:
    """Query (QIDO-RS) panoramic instances, retrieve them (WADO-RS), screen them, store SR + SC (STOW-RS).

    Results go into each image's own study as new series. Progress is kept in --state after
    every image: run it again (e.g. nightly, with --since) and it screens only what is new.
    """
    from osteopano.pacs import dicomweb

    _logging(verbose)
    summary = dicomweb.pull(url, state_path=state, modality=None if modality.lower() == "any" else modality,
                            since=since, screen=_screener(model, engine, threshold_mm), limit=limit, user=user,
                            password=os.environ.get(PASSWORD_ENV), out_dir=out, fhir_dir=fhir_out)
    typer.echo(f"{summary.found} matching instances: {summary.sent} screened and stored, {summary.skipped} "
               f"skipped, {summary.errors} not screened, {summary.already} done before"
               + (f", {summary.on_server} with results already on the server" if summary.on_server else "")
               + (f", {summary.left} left for the next run (--limit)" if summary.left else "")
               + f"; state in {state}")


@command.command("listen")
def listen(
    port: int = typer.Option(..., "--port", min=1, max=65535, help="TCP port to receive C-STORE on."),
    ae_title: str = typer.Option("OSTEOPANO", "--ae-title", help="This receiver's AE title (also the "
                                 "calling AE title when forwarding)."),
    forward: str | None = typer.Option(None, "--forward", help="Send SR + SC to AE@HOST:PORT (C-STORE)."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Address to listen on (0.0.0.0: every interface, "
                             "for modalities on the network)."),
    modality: str = typer.Option("PX", "--modality", help="Modality to screen ('any' for all image modalities)."),
    model: Path | None = typer.Option(None, "--model", help="A run folder or .onnx model (default: measurement only)."),
    engine: str = typer.Option("auto", "--engine", help="Model engine: auto | torch | onnx."),
    queue_size: int = typer.Option(16, "--queue", min=1, help="Images waiting to be screened before the "
                                   "receiver answers 'out of resources' (the sender retries)."),
    threshold_mm: float = typer.Option(3.0, "--threshold-mm", min=0.1, help="MCW below this is flagged (mm)."),
    out: Path | None = typer.Option(None, "--out", help="Also write each SR and SC into DIR."),
    fhir_out: Path | None = typer.Option(None, "--fhir-out", help="Write a FHIR bundle per image into DIR."),
) -> None:
    """Receive images by DICOM C-STORE, screen each panoramic one, send the SR and SC on.

    Runs until interrupted (Ctrl-C or SIGTERM), then finishes the images already received.
    """
    import signal
    import threading

    from osteopano.pacs.listener import Listener, parse_destination

    _logging(False)
    dest = parse_destination(forward) if forward else None
    listener = Listener(port=port, ae_title=ae_title, screen=_screener(model, engine, threshold_mm), bind=bind,
                        forward=dest, out_dir=out, fhir_dir=fhir_out,
                        modality=None if modality.lower() == "any" else modality, queue_size=queue_size)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    listener.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
    if listener.counts["errors"] or listener.counts["forward_failed"]:
        raise OsteopanoError(f"{listener.counts['errors']} images not screened, "
                             f"{listener.counts['forward_failed']} results not forwarded (see the log)")
