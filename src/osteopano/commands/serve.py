"""``osteopano serve``: the clinic web page and REST API on a local port (FastAPI + uvicorn).

Without a MODEL it runs in measurement mode: the mandibular cortical width is the screen (no trained
model needed); with one, the page shows the model's score and the measurement."""

from __future__ import annotations

import copy
from pathlib import Path

import typer

from osteopano.errors import OsteopanoError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def command(
    model: Path = typer.Argument(None, help="A training run folder (PyTorch, with heatmaps) or an exported "
                                 ".onnx file (ONNX Runtime only, no heatmaps). Without it: measurement mode "
                                 "(the cortical width only)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 = every network interface)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    threshold_mm: float = typer.Option(3.0, min=0.1, max=20.0, help="Classical decision: refer when the mean "
                                       "mandibular cortical width is below this (mm)."),
    measure: bool = typer.Option(True, help="With a MODEL, also measure the cortical width (--no-measure: the "
                                 "model's score only)."),
    allowed_host: list[str] = typer.Option(None, help="A host name or address the page is opened with (repeat "
                                           "for several); the bind address, localhost and 127.0.0.1 always are. "
                                           "Requests naming another Host are refused (DNS rebinding)."),
    workers: int = typer.Option(2, min=1, help="Screenings computed at the same time (threads)."),
    queue_size: int = typer.Option(8, min=0, help="Screenings allowed to wait for a worker; beyond "
                                   "workers + queue-size the server answers 503 (busy)."),
    max_upload_mb: float = typer.Option(50.0, min=0.01, help="Largest accepted upload in MB (larger: 413)."),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds one screening may take before 504."),
    body_timeout: float = typer.Option(30.0, min=0.1, help="Seconds an upload may take to arrive before 408."),
    max_megapixels: float = typer.Option(30.0, min=0.1, help="Largest decoded image in megapixels (larger: 413; "
                                         "read from the header, before decoding)."),
    pixel_budget: float = typer.Option(45.0, min=0.1, help="Megapixels of all images screened at once (beyond: "
                                       "503); about 30 bytes a pixel at the page's peak, so 45 = ~1.4 GB."),
    keep_uploads: Path = typer.Option(None, help="Save every upload and its result in this folder (files "
                                      "readable by this user only, mode 0600: they can hold patient names). "
                                      "Default: uploads stay in memory and are never written to disk."),
) -> None:
    """Serve the upload page (http://HOST:PORT/) and the API (/api/v1/measure, /api/v1/screen with a model,
    /api/v1/model, /healthz, /docs). No authentication: keep the default 127.0.0.1 or put it behind an
    HTTPS proxy that authenticates users (the proxy must pass the Host header through, and that name be
    given with --allowed-host). Logs hold no file names, patient IDs or results."""
    try:
        import uvicorn
        import uvicorn.config
    except ImportError:
        raise OsteopanoError("the web server needs the web extra: pip install 'osteopano[web]'") from None
    from rich.console import Console
    from rich.markup import escape

    from osteopano.web.app import allowed_host_names, create_app

    console = Console(stderr=True, soft_wrap=True)
    if model is not None and not model.exists():
        raise OsteopanoError(f"{model}: model not found (give a training run folder or an .onnx file)")
    hosts = allowed_host_names(host, allowed_host or ())
    app = create_app(model, measure=measure, threshold_mm=threshold_mm, max_upload_mb=max_upload_mb,
                     workers=workers, queue_size=queue_size, timeout_s=timeout, body_timeout_s=body_timeout,
                     keep_uploads=keep_uploads, allowed_hosts=hosts, max_megapixels=max_megapixels,
                     pixel_budget_megapixels=pixel_budget)
    service = app.state.service
    what = (f"model [bold]{escape(str(service.model.model_id))}[/]" if service.has_model
            else f"measurement mode (no model; MCW threshold {threshold_mm:g} mm)")
    console.print(f"osteopano: {what} - open http://{host}:{port}/ (API docs at /docs); Ctrl+C stops.")
    if host not in LOCAL_HOSTS:
        console.print("[yellow]warning: listening beyond this computer without authentication or HTTPS; "
                      "put it behind a proxy that provides both.")
        if not allowed_host:
            console.print(f"[yellow]only these host names are answered: {escape(', '.join(hosts))}; add the "
                          "name or address clients use with --allowed-host.")
    if keep_uploads is not None:
        console.print(f"[yellow]uploads and results are saved in {escape(str(keep_uploads))} (mode 0600)")
    uvicorn.run(app, host=host, port=port, log_config=_log_config(uvicorn.config.LOGGING_CONFIG),
                server_header=False)


def _log_config(base: dict) -> dict:
    """uvicorn's logging plus our app logger; pydicom (whose warnings can quote tags) only at ERROR."""
    config = copy.deepcopy(base)
    config["loggers"]["osteopano"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["pydicom"] = {"handlers": ["default"], "level": "ERROR", "propagate": False}
    return config
