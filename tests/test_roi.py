"""Cortex-ROI input and clinical covariates: crop geometry on the synthetic phantom, and ROI / covariate
models through train, resume, evaluate, export (ONNX parity), predict and Grad-CAM."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from screen_support import run_cli

from osteopano.cortex import measure as cortex
from osteopano.phantom import generate as phantom
from osteopano.phantom.distractors import Distractors
from osteopano.prepare import covariates as cov
from osteopano.prepare import roi
from osteopano.data.dataset import discover
from osteopano.io.images import from_array, read_image

WIDTH = 700  # ~0.42 mm/px: small and quick, the cortex is still ~8 px wide


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """16 synthetic phantoms with masks; the manifest's pixel_spacing_mm column gives the spacing."""
    out = tmp_path_factory.mktemp("roi-phantoms")
    # the clean phantom (no distractors): these tests are about the ROI model, not the border finder
    phantom.generate(out, 16, 3, width=WIDTH, masks=True, progress=False, distractors=Distractors.none())
    return out / "manifest.csv"


def _with_spacing(sample):
    """The phantom PNG as a Radiograph carrying the manifest's pixel spacing (PNG files hold none)."""
    return from_array(read_image(sample.path).pixels, sample.number("pixel_spacing_mm"))


def _measured(sample):
    image = read_image(sample.path)
    spacing = sample.number("pixel_spacing_mm")
    return image, cortex.measure(image, pixel_spacing_mm=spacing), spacing


def test_crops_hold_the_cortex_band(phantoms) -> None:
    for sample in discover(phantoms).samples[:2]:
        image, measurement, spacing = _measured(sample)
        assert measurement.quality != "failed"
        mask = cv2.imread(str(sample.path.parent / "masks" / f"{sample.path.stem}_cortex.png"), 0) / 255.0
        crops, affines = roi.roi_crops(image, measurement, pixel_spacing_mm=spacing)
        mask_crops, _ = roi.roi_crops(mask, measurement, pixel_spacing_mm=spacing)
        h, w = round(roi.SIZE_MM[1] * roi.PX_PER_MM), round(roi.SIZE_MM[0] * roi.PX_PER_MM)
        for side, crop, m in zip(roi.SIDES, crops, mask_crops):
            assert crop.shape == m.shape == (h, w)
            band = np.where(m.mean(axis=1) > 0.5)[0]  # rows mostly inside the cortex
            border_row = h - roi.BORDER_FROM_BOTTOM_MM * roi.PX_PER_MM
            # the border where expected, within 2 mm (about 5 image pixels of these 0.42 mm/px phantoms)
            assert abs(band.max() - border_row) <= 2.0 * roi.PX_PER_MM, (side, band)
            width_mm = (band.max() - band.min() + 1) / roi.PX_PER_MM
            assert width_mm == pytest.approx(sample.number(f"mcw_{side}_mm"), rel=0.35), side
            assert m[:5].mean() < 0.05 and m[-5:].mean() < 0.05  # trabecular bone above, soft tissue below
            # the cortex (bright) lies above the soft tissue (dark): bone is up in every crop
            assert crop[band].mean() > crop[-5:].mean() + 0.1


def test_crop_scale_follows_pixel_spacing() -> None:
    """The same physical site at 0.5x the pixels and 2x the spacing gives the same crop; a wrong spacing does
    not. (The site is measured once, on the larger image, so this checks the crop, not the measurement's
    consistency across resolutions, which benchmarks/measure_consistency.py covers.)"""
    import dataclasses

    large_ph, small_ph = phantom.render(5, width=1200), phantom.render(5, width=600)
    large = from_array(large_ph.pixels, large_ph.truth["pixel_spacing_mm"])
    small = from_array(small_ph.pixels, small_ph.truth["pixel_spacing_mm"])
    m_large = cortex.measure(large)
    f = small_ph.pixels.shape[1] / large_ph.pixels.shape[1]
    sides = {name: dataclasses.replace(side, site_xy=(side.site_xy[0] * f, side.site_xy[1] * f))
             for name in ("right", "left") if (side := getattr(m_large, name)).site_xy is not None}
    assert len(sides) == 2, "both sites of the clean-enough phantom are located"
    m_small = dataclasses.replace(m_large, pixel_spacing_mm=small_ph.truth["pixel_spacing_mm"], **sides)
    reference = roi.roi_crops(large, m_large)[0]
    same = roi.roi_crops(small, m_small)[0]
    wrong = roi.roi_crops(small, m_small, pixel_spacing_mm=2 * small_ph.truth["pixel_spacing_mm"])[0]
    from scipy.ndimage import gaussian_filter

    def detail(crop: np.ndarray) -> np.ndarray:  # the crop's structures (border, cortex), not its mean ramp
        crop = crop.astype(np.float64)
        return (crop - gaussian_filter(crop, 4)).ravel()

    for ref, ok, bad in zip(reference, same, wrong):
        assert ref.shape == ok.shape == bad.shape
        r_ok = np.corrcoef(ok.ravel(), ref.ravel())[0, 1]
        assert r_ok > 0.9
        assert np.corrcoef(detail(ok), detail(ref))[0, 1] > np.corrcoef(detail(bad), detail(ref))[0, 1]


def test_crop_affine_maps_back_onto_the_image(phantoms) -> None:
    image, measurement, spacing = _measured(discover(phantoms).samples[0])
    crops, affines = roi.roi_crops(image, measurement, pixel_spacing_mm=spacing, out_px=64)
    for side, crop, affine in zip(roi.SIDES, crops, affines):
        assert crop.shape == (64, 64)
        back = roi.crop_to_image(np.ones((64, 64), np.float32), affine, image.pixels.shape)
        area_mm2 = (back > 0.5).sum() * spacing ** 2
        assert area_mm2 == pytest.approx(roi.SIZE_MM[0] * roi.SIZE_MM[1], rel=0.1)
        site = getattr(measurement, side).site_xy
        x, y = affine @ np.array([*site, 1.0])
        assert x == pytest.approx(32, abs=1)  # the site is centred along the border
        assert y == pytest.approx(64 * (1 - roi.BORDER_FROM_BOTTOM_MM / roi.SIZE_MM[1]), abs=1)


def test_no_spacing_or_no_cortex_is_a_clear_error(phantoms) -> None:
    image, measurement, _ = _measured(discover(phantoms).samples[0])
    bare = from_array(image.pixels)
    unmeasured = cortex.measure(bare)
    with pytest.raises(roi.RoiError, match="pixel spacing unknown"):
        roi.roi_crops(bare, unmeasured)
    blank = from_array(np.full((300, 600), 0.5, np.float32), 0.3)
    with pytest.raises(roi.RoiError, match="could not be located"):
        roi.roi_crops(blank, cortex.measure(blank))


def test_covariate_encoding_and_missing_values() -> None:
    stats = cov.covariate_stats(["age", "sex"], [{"age": "60"}, {"age": "80"}])
    assert stats["age"] == {"mean": 70.0, "std": 10.0}
    x = cov.encode_covariates(["age", "sex"], {"age": 80, "sex": "female"}, stats)
    assert x.tolist() == [1.0, 1.0, 0.0]
    assert cov.covariate_names(["age", "sex"]) == ["age", "sex_F", "sex_M"]
    with pytest.raises(cov.CovariateError, match="needs the covariate 'sex'"):
        cov.encode_covariates(["age", "sex"], {"age": 70}, stats)
    with pytest.raises(cov.CovariateError, match="unknown covariate"):
        cov.parse_covariates("age,bmi")
    with pytest.raises(cov.CovariateError, match="not a number"):
        cov.encode_covariates(["age"], {"age": "seventy"}, stats)


# ----------------------------------------------------------------------------- models (torch)

TINY = ["--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "64", "--precision", "fp32"]


@pytest.fixture(scope="module")
def roi_run(phantoms, tmp_path_factory) -> Path:
    """ROI + covariates model, interrupted after epoch 1 of 2 and resumed."""
    pytest.importorskip("torch", reason="the training stack (torch) is not installed")
    from osteopano.model.config import RunConfig
    from osteopano.prepare.intensity import Preprocess
    from osteopano.train.loop import train_run

    out = tmp_path_factory.mktemp("roi-runs") / "roi"
    cfg = RunConfig(data=str(phantoms), weights="none", epochs=2, batch_size=8, image_size=64, precision="fp32",
                    # the recipe `train --input roi` makes, so the CLI test reuses the memoised crops
                    preprocess=Preprocess(size=64, clahe_clip=0, mean=(0.5,) * 3, std=(0.5,) * 3).to_dict(),
                    input_mode="roi",
                    covariates=["age", "sex"], split_fractions=(0.5, 0.25, 0.25))

    def stop(epoch, _row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out, on_epoch_end=stop)
    train_run(None, out, resume=True)
    return out


def test_roi_model_trains_resumes_and_reports_baselines(roi_run) -> None:
    spec = json.loads((roi_run / "config.json").read_text())["spec"]
    assert spec["input_mode"] == "roi" and spec["covariates"] == ["age", "sex"]
    assert set(spec["covariate_stats"]) == {"age"}
    assert spec["preprocess"]["clahe_clip"] == 0 and spec["roi"]["px_per_mm"] == roi.PX_PER_MM
    history = list(csv.DictReader(open(roi_run / "history.csv")))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    metrics = json.loads((roi_run / "metrics.json").read_text())
    assert 0.0 <= metrics["auc"]["value"] <= 1.0
    assert set(metrics["baselines"]) == {"age_logistic", "mcw", "mcw_measured"}
    assert metrics["baselines"]["mcw"]["source"] == "manifest"
    assert metrics["baselines"]["mcw_measured"]["source"] == "measured"
    small_class = min(metrics["n_positive"], metrics["n_negative"]) < 2  # 4 test images: maybe one positive
    for entry in metrics["baselines"].values():
        assert 0.0 <= entry["auc"] <= 1.0
        # a class of one cannot be resampled: then there is no interval, and never a made-up one
        assert (entry["ci"] is None) == small_class
        assert small_class or entry["ci"][0] <= entry["auc"] <= entry["ci"][1]


def test_roi_cli_train_without_covariates_and_evaluate(phantoms, roi_run, monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "plain"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(phantoms), "--out", str(out), *TINY, "--input", "roi")
    assert code == 0, err
    plain = json.loads((out / "config.json").read_text())["spec"]
    assert plain["covariates"] == []
    # the CLI and the Python API (roi_run) train with the same recipe: the preset's, for the backbone
    assert plain["preprocess"] == json.loads((roi_run / "config.json").read_text())["spec"]["preprocess"]
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", str(roi_run), str(phantoms), "--out", str(tmp_path / "ev"))
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # every phantom is scored or listed as skipped (an ROI run skips an image whose cortex it cannot locate)
    assert metrics["n"] + len(metrics["skipped_files"]) == 16 and metrics["n"] >= 12, metrics["skipped_files"]
    assert "mcw" in metrics["baselines"]


def test_roi_onnx_parity_and_torch_free_predict(phantoms, roi_run) -> None:
    from osteopano.model.onnx import export_onnx
    from osteopano.screen.engines import OnnxEngine, TorchEngine
    from osteopano.screen.screener import Screener

    info = export_onnx(roi_run)
    assert info["max_abs_diff"] < 1e-4
    samples = discover(phantoms).samples[:4]
    paths = [_with_spacing(s) for s in samples]
    covs = {"age": 71, "sex": "F"}
    torch_engine, onnx_engine = Screener(TorchEngine.load(roi_run)), Screener(OnnxEngine(info["path"]))
    assert onnx_engine.spec.input_mode == "roi" and onnx_engine.spec == torch_engine.spec
    p_torch = [r.probability for r in torch_engine.predict_batch(paths, covariates=covs)]
    p_onnx = [r.probability for r in onnx_engine.predict_batch(paths, covariates=covs)]
    assert np.abs(np.subtract(p_torch, p_onnx)).max() < 1e-4
    younger = onnx_engine.predict(paths[0], covariates={"age": 40, "sex": "M"}).probability
    assert younger != pytest.approx(p_onnx[0], abs=1e-7)  # the covariates reach the head
    code = f"""
import sys, osteopano
m = osteopano.load({str(info['path'])!r})
r = m.predict({str(samples[0].path)!r}, covariates={{'age': 71, 'sex': 'F'}},
              pixel_spacing_mm={samples[0].number("pixel_spacing_mm")!r})
assert abs(r.probability - {p_onnx[0]!r}) < 1e-6
heavy = [n for n in ("torch", "timm", "torchvision", "pytorch_grad_cam") if n in sys.modules]
assert not heavy, heavy
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")


def test_missing_covariates_or_spacing_are_per_image_errors(phantoms, roi_run) -> None:
    from osteopano.errors import OsteopanoError
    from osteopano.screen.engines import TorchEngine
    from osteopano.screen.screener import Screener

    model = Screener(TorchEngine.load(roi_run))
    sample = discover(phantoms).samples[0]
    with pytest.raises(OsteopanoError, match="needs the covariate 'age'"):
        model.predict(_with_spacing(sample))  # the manifest's age is not read at prediction time
    results = model.predict_batch([sample.path, _with_spacing(sample)], covariates={"age": 70, "sex": "F"})
    assert "pixel spacing unknown" in results[0].error
    assert results[1].error is None and 0 <= results[1].probability <= 1


def test_predict_cli_draws_roi_heatmaps_on_the_full_image(phantoms, roi_run, monkeypatch, capsys, tmp_path) -> None:
    sample = discover(phantoms).samples[0]
    path = sample.path
    code, _, err = run_cli(monkeypatch, capsys, "predict", str(roi_run), str(path), "--age", "70", "--sex", "F",
                        "--pixel-spacing", str(sample.number("pixel_spacing_mm")),
                        "--heatmaps", str(tmp_path / "h"), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    row = next(csv.DictReader(open(tmp_path / "p.csv")))
    assert row["error"] == "" and 0 <= float(row["probability"]) <= 1
    overlay = cv2.imread(str(next((tmp_path / "h").glob("*.png"))))
    assert overlay.shape[:2] == read_image(path).pixels.shape
    from osteopano.screen.screener import load

    heat = load(roi_run).predict(_with_spacing(sample), covariates={"age": 70, "sex": "F"}, heatmap=True).heatmap
    assert heat.shape == read_image(path).pixels.shape
    assert heat[: heat.shape[0] // 3].max() == 0  # nothing outside the two cortex crops (upper image)


def test_roi_training_torch_and_onnx_see_the_same_input(phantoms, roi_run) -> None:
    """ROI crops: training's cached planes, the torch engine and the ONNX engine give the same probabilities."""
    import torch

    from osteopano.model.onnx import export_onnx
    from osteopano.model.run import load_run
    from osteopano.prepare.covariates import encode_covariates
    from osteopano.screen.engines import OnnxEngine, TorchEngine
    from osteopano.screen.screener import Screener
    from osteopano.train.inputs import load_planes
    from osteopano.train.tensors import predict_logits

    loaded = load_run(roi_run)
    spec = loaded.spec
    samples = discover(phantoms).samples[:4]
    planes, good, bad, _ = load_planes(samples, spec, None, 1)
    assert not bad
    covs = {"age": 66, "sex": "M"}
    cov = torch.from_numpy(np.stack([encode_covariates(spec.covariates, covs, spec.covariate_stats)] * len(good)))
    logits = predict_logits(loaded.model, torch.from_numpy(planes), cov, spec.preprocess, 3, "fp32")
    p_train = torch.softmax(logits, 1)[:, spec.positive_index].numpy()
    paths = [_with_spacing(s) for s in samples]
    onnx_file = export_onnx(roi_run, roi_run / "identity.onnx")["path"]
    p_torch = [r.probability for r in Screener(TorchEngine(loaded)).predict_batch(paths, covariates=covs)]
    p_onnx = [r.probability for r in Screener(OnnxEngine(onnx_file)).predict_batch(paths, covariates=covs)]
    assert np.abs(p_train - np.array(p_torch)).max() < 1e-4 and np.abs(p_train - np.array(p_onnx)).max() < 1e-4
