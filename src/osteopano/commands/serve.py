"""``osteopano serve``: the clinic web page and REST API on a local port (FastAPI + uvicorn)."""

from __future__ import annotations

import copy
from pathlib import Path

import typer

from osteopano.errors import OsteopanoError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def command(
    model: Path = typer.Argument(..., help="A training run folder (PyTorch, with heatmaps) or an exported "
                                 ".onnx file (ONNX Runtime only, no heatmaps)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 = every network interface)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(2, min=1, help="Screenings computed at the same time (threads)."),
    queue_size: int = typer.Option(8, min=0, help="Screenings allowed to wait for a worker; beyond "
                                   "workers + queue-size the server answers 503 (busy)."),
    max_upload_mb: float = typer.Option(50.0, min=0.01, help="Largest accepted upload in MB (larger: 413)."),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds one screening may take before 504."),
    keep_uploads: Path = typer.Option(None, help="Save every upload and its result in this folder. "
                                      "Default: uploads stay in memory and are never written to disk."),
) -> None:
    """Serve the upload page (http://HOST:PORT/) and the API (/api/v1/screen, /api/v1/model, /healthz,
    /docs). No authentication: keep the default 127.0.0.1 or put it behind an HTTPS proxy that
    authenticates users. Logs hold no file names, patient IDs or results."""
    try:
        import uvicorn
        import uvicorn.config
    except ImportError:
        raise OsteopanoError("the web server needs the web extra: pip install 'osteopano[web]'") from None
    from rich.console import Console

    from osteopano.web.app import create_app

    console = Console(stderr=True, soft_wrap=True)
    if not model.exists():
        raise OsteopanoError(f"{model}: model not found (give a training run folder or an .onnx file)")
    app = create_app(model, max_upload_mb=max_upload_mb, workers=workers, queue_size=queue_size,
                     timeout_s=timeout, keep_uploads=keep_uploads)
    service = app.state.service
    console.print(f"osteopano: model [bold]{service.model.model_id}[/] - open http://{host}:{port}/ "
                  f"(API docs at /docs); Ctrl+C stops.")
    if host not in LOCAL_HOSTS:
        console.print("[yellow]warning: listening beyond this computer without authentication or HTTPS; "
                      "put it behind a proxy that provides both.")
    if keep_uploads is not None:
        console.print(f"[yellow]uploads and results are saved in {keep_uploads}")
    uvicorn.run(app, host=host, port=port, log_config=_log_config(uvicorn.config.LOGGING_CONFIG),
                server_header=False)


def _log_config(base: dict) -> dict:
    """uvicorn's logging plus our app logger; pydicom (whose warnings can quote tags) only at ERROR."""
    config = copy.deepcopy(base)
    config["loggers"]["osteopano"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["pydicom"] = {"handlers": ["default"], "level": "ERROR", "propagate": False}
    return config
