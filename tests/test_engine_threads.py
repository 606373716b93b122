"""The engines' thread settings (osteopano.screen.engines, docs/speed.md): a quarter of the cores for the
network by default, environment overrides, torch configured only when osteopano is the one importing it,
and nothing set by importing osteopano."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from screen_support import exported_onnx

from osteopano.errors import ModelError
from osteopano.screen.engines import OnnxEngine, network_threads

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (the variables below removed, ``env`` added); its last JSON line."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "OSTEOPANO_TORCH_THREADS", "OSTEOPANO_ONNX_THREADS")}
    clean["PYTHONPATH"] = os.pathsep.join([str(SRC), clean.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                         check=False, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_network_threads_is_a_quarter_of_the_cores(monkeypatch):
    for cores, expected in ((1, 1), (2, 1), (7, 1), (8, 2), (16, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert network_threads() == expected


def test_onnx_threads_default_and_override(screen_base, run, monkeypatch):
    onnx_file = exported_onnx(screen_base)
    monkeypatch.delenv("OSTEOPANO_ONNX_THREADS", raising=False)
    opts = OnnxEngine(onnx_file).session.get_session_options()
    assert opts.intra_op_num_threads == network_threads() and opts.inter_op_num_threads == 1
    monkeypatch.setenv("OSTEOPANO_ONNX_THREADS", "3")
    assert OnnxEngine(onnx_file).session.get_session_options().intra_op_num_threads == 3
    assert OnnxEngine(onnx_file, threads=2).session.get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("OSTEOPANO_ONNX_THREADS", "many")
    with pytest.raises(ModelError, match="OSTEOPANO_ONNX_THREADS"):
        OnnxEngine(onnx_file)


def test_importing_osteopano_sets_nothing():
    out = _python("import json, os, sys, osteopano, osteopano.cli, osteopano.screen.engines\n"
                  "print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY'), 'torch': 'torch' in sys.modules}))")
    assert out == {"omp": None, "torch": False}


def test_torch_engine_configures_torch_it_imports(run):
    code = ("import json, os, osteopano\n"
            f"m = osteopano.load({str(run)!r}, engine='torch')\n"
            "import torch\n"
            "from osteopano.screen.engines import network_threads\n"
            "print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY'), 'threads': torch.get_num_threads(),"
            " 'expected': network_threads()}))")
    out = _python(code)
    assert out["omp"] == "PASSIVE" and out["threads"] == out["expected"]
    assert _python(code, OSTEOPANO_TORCH_THREADS="2")["threads"] == 2
    assert _python(code, OMP_WAIT_POLICY="ACTIVE")["omp"] == "ACTIVE"  # a user's choice is kept


def test_torch_imported_first_keeps_its_threads(run):
    out = _python("import json, torch\ntorch.set_num_threads(3)\nimport os, osteopano\n"
                  f"osteopano.load({str(run)!r}, engine='torch')\n"
                  "print(json.dumps({'threads': torch.get_num_threads(), 'omp': os.environ.get('OMP_WAIT_POLICY')}))")
    assert out == {"threads": 3, "omp": None}
