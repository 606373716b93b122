"""The Python API: osteopano.load -> predict / predict_batch / card / model_id on both engines."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from screen_support import exported_onnx

import osteopano
from osteopano.model.card import build_card
from osteopano.screen.engines import OnnxEngine, TorchEngine
from osteopano.errors import ImageReadError, ModelError
from osteopano.io.images import read_image


@pytest.fixture(scope="session")
def torch_model(run):
    return osteopano.load(run)


@pytest.fixture(scope="session")
def image(screen_base, run) -> Path:
    return sorted((screen_base / "phantoms").glob("*.png"))[0]


def test_load_picks_the_engine(run, screen_base, torch_model):
    onnx_file = exported_onnx(screen_base)
    assert isinstance(torch_model.engine, TorchEngine) and torch_model.supports_heatmaps
    assert isinstance(osteopano.load(onnx_file).engine, OnnxEngine)
    with pytest.raises(ModelError, match="osteopano export"):
        osteopano.load(run, engine="onnx")  # the run folder holds no model.onnx
    with pytest.raises(ModelError, match="run folder"):
        osteopano.load(onnx_file, engine="torch")
    with pytest.raises(ModelError, match="no such"):
        osteopano.load(screen_base / "nothing")
    with pytest.raises(ModelError, match="unknown engine"):
        osteopano.load(run, engine="tensorflow")


def test_predict_path_array_and_radiograph_agree(torch_model, image):
    radiograph = read_image(image)
    by_path = torch_model.predict(image)
    by_radiograph = torch_model.predict(radiograph)
    by_array = torch_model.predict(radiograph.pixels)
    assert by_path.probability == pytest.approx(by_radiograph.probability, abs=1e-7)
    assert by_path.probability == pytest.approx(by_array.probability, abs=1e-7)
    assert by_path.path == str(image) and by_path.error is None and by_path.heatmap is None
    assert by_path.decision == (by_path.probability >= by_path.threshold)
    assert by_path.model_id == torch_model.model_id
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_path.probability = 0.0


def test_threshold_override_moves_the_decision(run, image):
    p = osteopano.load(run).predict(image).probability
    assert osteopano.load(run, threshold=max(0.0, p - 0.01)).predict(image).decision is True
    assert osteopano.load(run, threshold=min(1.0, p + 0.01)).predict(image).decision is False
    with pytest.raises(ModelError, match="not a probability"):
        osteopano.load(run, threshold=1.5)


def test_predict_batch_records_errors_and_goes_on(torch_model, image, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    results = torch_model.predict_batch([image, bad, tmp_path / "missing.png", image], batch_size=3)
    assert [r.error is None for r in results] == [True, False, False, True]
    assert results[1].probability is None and results[1].decision is None and "bad.png" in results[1].error
    assert results[0].probability == results[3].probability
    with pytest.raises(ImageReadError):
        torch_model.predict(bad)


def test_heatmap_is_full_resolution(torch_model, image, screen_base):
    r = torch_model.predict(image, heatmap=True, pixel_spacing_mm=0.1)
    h, w = read_image(image).pixels.shape
    assert r.heatmap.shape == (h, w) and r.heatmap.dtype == np.float32
    assert 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    assert r.pixel_spacing_mm == 0.1
    onnx_model = osteopano.load(exported_onnx(screen_base))
    with pytest.warns(UserWarning, match="Grad-CAM"):
        assert onnx_model.predict(image, heatmap=True).heatmap is None


def test_card_and_model_id(torch_model, run):
    import hashlib

    card = torch_model.card
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()[:8]
    assert torch_model.model_id == f"run-{digest}" == card["model_id"]
    assert card["backbone"] == "efficientnet_lite0" and card["classes"] == ["normal", "osteoporosis"]
    assert card["threshold"]["value"] == torch_model.threshold and card["threshold"]["description"]
    assert card["threshold"] == torch_model.spec.threshold.to_dict()  # the card is written from the spec
    metrics = json.loads((run / "metrics.json").read_text())
    assert card["test_metrics"]["auc"] == metrics["auc"]
    assert card["test_metrics"]["sensitivity"]["ci"] == metrics["sensitivity"]["ci"]
    assert card["training_data"]["n_images"] == 24
    assert card["osteopano_version"] == osteopano.__version__ and card["trained"]
    json.dumps(card)  # JSON-ready (it goes into the ONNX metadata)


def test_run_trained_on_the_phantom_records_synthetic(torch_model):
    # the tiny run was trained on `osteopano.phantom.generate` output, whose dataset.json marks it synthetic
    assert torch_model.engine.run.config.data_synthetic is True
    assert torch_model.card["training_data"]["synthetic"] is True


@pytest.mark.parametrize("recorded", [True, False, None])
def test_card_says_whether_the_data_were_synthetic(torch_model, recorded):
    config = dataclasses.replace(torch_model.engine.run.config, data_synthetic=recorded)
    run = torch_model.engine.run
    card = build_card(run.run_dir, config, run.spec, run.model_id)
    assert card["training_data"]["synthetic"] is recorded
    description = card["training_data"]["description"]
    assert ("SYNTHETIC" in description) is (recorded is True)
    assert ("unknown" in description) is (recorded is None)


def test_import_osteopano_stays_light():
    import subprocess
    import sys

    code = "import sys, osteopano; assert 'torch' not in sys.modules and 'osteopano.screen.engines' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
