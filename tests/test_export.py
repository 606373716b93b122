"""ONNX export: a checked, self-contained file that predicts like PyTorch, used without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from screen_support import exported_onnx, run_cli


@pytest.fixture(scope="session")
def onnx_file(run, screen_base) -> Path:
    return exported_onnx(screen_base)


def test_onnx_file_is_valid_and_self_describing(onnx_file, run):
    import onnx

    from osteopano import __version__
    from osteopano.model.config import RunConfig

    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    cfg = RunConfig.load(run / "config.json")
    assert meta["osteopano.spec"] == cfg.spec.to_dict()  # one entry carries what the model expects
    assert meta["osteopano.spec"]["threshold"]["rule"] == cfg.threshold_rule
    assert meta["osteopano.card"]["threshold"] == cfg.spec.threshold.to_dict()  # the card comes from the spec
    assert meta["osteopano.version"] == __version__
    assert meta["osteopano.card"]["model_id"] == meta["osteopano.model_id"]
    assert meta["osteopano.model_id"].startswith("run-")
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param  # dynamic batch axis


def test_onnx_matches_torch_on_20_images(onnx_file, run, screen_base):
    from osteopano.screen.engines import OnnxEngine, TorchEngine
    from osteopano.screen.screener import Screener

    images = sorted((screen_base / "phantoms").glob("*.png"))[:20]
    assert len(images) == 20
    p_torch = np.array([r.probability for r in Screener(TorchEngine.load(run)).predict_batch(images, batch_size=7)])
    p_onnx = np.array([r.probability for r in Screener(OnnxEngine(onnx_file)).predict_batch(images, batch_size=6)])
    assert np.abs(p_torch - p_onnx).max() < 1e-4
    assert p_torch.std() > 0  # the images are told apart, not a constant output


def test_onnx_path_never_imports_torch(onnx_file, screen_base):
    image = sorted((screen_base / "phantoms").glob("*.png"))[0]
    code = f"""
import sys, osteopano
m = osteopano.load({str(onnx_file)!r})
r = m.predict({str(image)!r})
assert 0.0 <= r.probability <= 1.0 and r.model_id == m.model_id
assert m.card["training_data"]["n_images"] == 24
heavy = [n for n in ("torch", "timm", "sklearn", "torchvision", "pytorch_grad_cam") if n in sys.modules]
assert not heavy, heavy
print("ok", r.probability)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok ")


def test_export_command_default_path(monkeypatch, capsys, run, onnx_file, tmp_path):
    import shutil

    copy = tmp_path / "run_copy"
    shutil.copytree(run, copy)
    code, out, err = run_cli(monkeypatch, capsys, "export", str(copy))
    assert code == 0, err
    assert (copy / "model.onnx").is_file() and "max |p_torch - p_onnx|" in out
    # the run folder now also loads on the onnx engine, and names the same weights
    import osteopano

    assert osteopano.load(copy, engine="onnx").model_id.endswith(osteopano.load(onnx_file).model_id[-8:])


def test_export_of_an_incomplete_run_is_one_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "r").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "export", str(tmp_path / "r"))
    assert code == 2 and err.startswith("error: ") and "missing" in err and len(err.strip().splitlines()) == 1


def test_training_torch_and_onnx_see_the_same_input(onnx_file, run, screen_base):
    """The one preparation chain: the probabilities training computes (its cached uint8 planes, the
    torch normalisation path) equal the torch engine's and the ONNX engine's on the same images."""
    import torch

    from osteopano.data.dataset import discover
    from osteopano.model.run import load_run
    from osteopano.screen.engines import OnnxEngine, TorchEngine
    from osteopano.screen.screener import Screener
    from osteopano.train.inputs import load_planes
    from osteopano.train.tensors import predict_logits

    loaded = load_run(run)
    samples = discover(screen_base / "phantoms").samples[:12]
    planes, good, bad, _ = load_planes(samples, loaded.spec, None, 1)
    assert not bad and len(good) == len(samples)
    cov = torch.zeros((len(samples), 0))
    logits = predict_logits(loaded.model, torch.from_numpy(planes), cov, loaded.spec.preprocess, 5, "fp32")
    p_train = torch.softmax(logits, 1)[:, loaded.spec.positive_index].numpy()
    paths = [s.path for s in samples]
    p_torch = np.array([r.probability for r in Screener(TorchEngine(loaded)).predict_batch(paths, batch_size=4)])
    p_onnx = np.array([r.probability for r in Screener(OnnxEngine(onnx_file)).predict_batch(paths, batch_size=5)])
    assert np.abs(p_train - p_torch).max() < 1e-4 and np.abs(p_train - p_onnx).max() < 1e-4
    assert p_train.std() > 0


def test_files_written_before_the_model_spec_still_load(onnx_file, run, screen_base, tmp_path):
    """A run folder (config version 1) and an ONNX file (eight metadata keys) in the layout osteopano 0.1
    wrote load and predict exactly as today's."""
    import shutil

    import onnx

    from osteopano.screen.screener import load

    old_run = tmp_path / "old-run"
    shutil.copytree(run, old_run)
    cfg = json.loads((run / "config.json").read_text())
    spec = cfg.pop("spec")
    cfg.update(config_version=1, preprocess=spec["preprocess"], input_mode=spec["input_mode"], roi=spec["roi"],
               covariates=spec["covariates"], covariate_stats=spec["covariate_stats"], classes=spec["classes"],
               positive=spec["positive"], threshold=spec["threshold"]["value"],
               threshold_rule=spec["threshold"]["rule"], threshold_note=spec["threshold"]["description"])
    cfg.pop("threads")
    (old_run / "config.json").write_text(json.dumps(cfg))
    model = onnx.load(str(onnx_file))
    meta = {p.key: p.value for p in model.metadata_props}
    spec_meta = json.loads(meta["osteopano.spec"])
    del model.metadata_props[:]
    old = {"preprocess": spec_meta["preprocess"], "classes": spec_meta["classes"],
           "positive": spec_meta["positive"], "threshold": spec_meta["threshold"],
           "card": json.loads(meta["osteopano.card"]), "model_id": json.loads(meta["osteopano.model_id"]),
           "version": "0.1.0", "input": {"mode": "whole", "covariates": [], "covariate_stats": {}}}
    for key, value in old.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = "osteopano." + key, json.dumps(value)
    onnx.save(model, str(tmp_path / "old.onnx"))
    image = sorted((screen_base / "phantoms").glob("*.png"))[0]
    today = load(run).predict(image).probability
    assert load(old_run).predict(image).probability == pytest.approx(today, abs=1e-6)
    assert load(tmp_path / "old.onnx").predict(image).probability == pytest.approx(today, abs=1e-4)
    assert load(old_run).spec == load(run).spec
    # a file no osteopano wrote fails in one line, saying how to re-export
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    from osteopano.errors import ModelError

    with pytest.raises(ModelError, match="osteopano export"):
        load(tmp_path / "bare.onnx")
