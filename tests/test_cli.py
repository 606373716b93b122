"""The command line as a whole: every command is listed, user errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import osteopano
from osteopano.cli import COMMANDS


def osteopano_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "osteopano", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    result = osteopano_cli("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout, name


def test_version():
    result = osteopano_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"osteopano {osteopano.__version__}"


def test_user_error_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere"
    result = osteopano_cli("inspect", str(missing))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "Traceback" not in result.stderr
