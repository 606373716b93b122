"""The ``osteopano`` command line.

Each command lives in its own module under ``osteopano.commands`` and exposes a
function named ``command``; heavy imports (torch, timm) happen inside the
commands, so ``osteopano --help`` stays fast and the ONNX-only install works.
"""

from __future__ import annotations

import importlib
import sys

import typer

from osteopano import __version__
from osteopano.errors import OsteopanoError

app = typer.Typer(
    name="osteopano",
    help="Screen dental panoramic radiographs for signs of osteoporosis. "
    "A screening aid for referral to DXA, not a diagnosis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"osteopano {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Screen dental panoramic radiographs for signs of osteoporosis."""


# Order is the order shown by --help.
COMMANDS = ["synth", "inspect", "train", "evaluate", "measure", "predict", "export", "serve", "pacs"]

for _name in COMMANDS:
    _module = importlib.import_module(f"osteopano.commands.{_name}")
    if isinstance(_module.command, typer.Typer):  # a command group (``osteopano pacs pull|listen``)
        app.add_typer(_module.command, name=_name)
        continue
    _doc = " ".join((_module.command.__doc__ or "").split("\n\n")[0].split())
    app.command(_name, short_help=_doc.split(". ")[0].rstrip(".") + ".")(_module.command)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except OsteopanoError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
