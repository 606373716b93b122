"""The synthetic panoramic phantom: determinism, manifest contract, DICOM, masks, the CLI and,
above all, that the ground truth (cortical width at the sites) is really in the pixels."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d, map_coordinates
from typer.testing import CliRunner

from osteopano.phantom import generate as phantom
from osteopano.cli import app
from osteopano.errors import OsteopanoError
from osteopano.io.images import read_image

CONTRACT_PREFIX = (
    "path", "patient_id", "age", "sex", "tscore", "label", "klemetti", "mcw_left_mm", "mcw_right_mm",
    "pixel_spacing_mm", "site_left_x", "site_left_y", "site_right_x", "site_right_y", "normal_left_x",
    "normal_left_y", "normal_right_x", "normal_right_y",
)  # fmt: skip


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "set"
    phantom.generate(out, 20, seed=11, width=400, masks=True, progress=False, workers=2)
    return out


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path, small_set):
    again = tmp_path / "again"
    phantom.generate(again, 20, seed=11, width=400, masks=True, progress=False, workers=1)
    assert _digests(again) == _digests(small_set)
    other = tmp_path / "other"
    phantom.generate(other, 20, seed=12, width=400, masks=True, progress=False, workers=1)
    a, b = _digests(small_set), _digests(other)
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_manifest_columns_and_values(small_set):
    with open(small_set / "manifest.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header[: len(CONTRACT_PREFIX)]) == CONTRACT_PREFIX
    assert all(c.startswith("acq_") for c in header[len(CONTRACT_PREFIX) :])
    rows = _rows(small_set)
    assert len(rows) == 20
    for r in rows:
        assert (small_set / r["path"]).is_file()
        assert 45 <= float(r["age"]) <= 85 and r["sex"] in {"F", "M"}
        assert r["label"] == ("osteoporosis" if float(r["tscore"]) <= -2.5 else "normal")
        assert r["klemetti"] in {"C1", "C2", "C3"}
        for side in ("left", "right"):
            assert 1.5 <= float(r[f"mcw_{side}_mm"]) <= 6.5
            n = np.array([float(r[f"normal_{side}_x"]), float(r[f"normal_{side}_y"])])
            assert np.linalg.norm(n) == pytest.approx(1, abs=1e-4)
            assert n[1] < -0.5  # from the inferior border up into the bone
        # the patient's right side is on the image's left; the chin region is inside the image
        assert float(r["site_right_x"]) < 200 < float(r["site_left_x"]) < 400
        margin_px = 4 / float(r["pixel_spacing_mm"])
        assert max(float(r["site_left_y"]), float(r["site_right_y"])) + margin_px < 195
        assert float(r["pixel_spacing_mm"]) == pytest.approx(float(r["acq_fov_mm"]) / 400, rel=1e-4)
        assert abs(float(r["acq_rotation_deg"])) <= 3
    # at the default width the spacing is that of a real OPG
    spacing_1600 = [float(r["acq_fov_mm"]) / 1600 for r in rows]
    assert 0.16 <= min(spacing_1600) and max(spacing_1600) <= 0.2


def test_some_patients_have_two_images_with_shared_truth(small_set):
    rows = _rows(small_set)
    by_patient: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], []).append(r)
    pairs = [v for v in by_patient.values() if len(v) == 2]
    assert pairs and all(len(v) <= 2 for v in by_patient.values())
    truth = ("age", "sex", "tscore", "label", "klemetti", "mcw_left_mm", "mcw_right_mm")
    for a, b in pairs:
        assert all(a[c] == b[c] for c in truth)
        assert a["acq_fov_mm"] != b["acq_fov_mm"]


def test_latent_model_proportions_and_imperfect_oracle():
    from sklearn.metrics import roc_auc_score

    patients = [phantom.sample_patient(s, "x") for s in np.random.SeedSequence(0).spawn(3000)]
    osteo = np.array([p.label == "osteoporosis" for p in patients])
    mcw = np.array([(p.mcw_left_mm + p.mcw_right_mm) / 2 for p in patients])
    klemetti = Counter(p.klemetti for p in patients)
    assert 0.28 <= osteo.mean() <= 0.42
    assert 0.38 <= klemetti["C1"] / 3000 <= 0.52 and 0.12 <= klemetti["C3"] / 3000 <= 0.28
    assert 0.75 <= roc_auc_score(osteo, -mcw) <= 0.9
    by_class = {c: mcw[[p.klemetti == c for p in patients]].mean() for c in ("C1", "C2", "C3")}
    assert by_class["C1"] - by_class["C2"] > 0.5 and by_class["C2"] - by_class["C3"] > 0.4


def test_masks_cortex_lies_along_the_bottom_of_the_mandible(small_set):
    for r in _rows(small_set)[:5]:
        stem = Path(r["path"]).stem
        mand = read_image(small_set / "masks" / f"{stem}_mandible.png").pixels > 0.5
        cortex = read_image(small_set / "masks" / f"{stem}_cortex.png").pixels > 0.5
        assert cortex.sum() > 200 and mand.sum() > 20 * cortex.sum() / 10
        assert (cortex & mand).sum() >= 0.97 * cortex.sum()
        cols = np.flatnonzero(cortex.any(0))
        lowest_cortex = np.array([np.flatnonzero(cortex[:, c]).max() for c in cols])
        lowest_mand = np.array([np.flatnonzero(mand[:, c]).max() for c in cols])
        assert np.median(np.abs(lowest_mand - lowest_cortex)) <= 1
        # both sites sit on the cortex' outer edge
        for side in ("left", "right"):
            x, y = round(float(r[f"site_{side}_x"])), round(float(r[f"site_{side}_y"]))
            assert cortex[y - 2 : y + 1, x].any()


def test_dicom_carries_the_manifest_spacing_and_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        phantom.generate(out, 2, seed=4, fmt="dicom", width=400, progress=False, workers=1)
    assert _digests(a) == _digests(b)
    for r in _rows(a):
        assert r["path"].endswith(".dcm")
        img = read_image(a / r["path"])
        assert img.source_format == "dicom" and img.bit_depth == 16
        assert img.pixel_spacing_mm == pytest.approx(float(r["pixel_spacing_mm"]), rel=1e-6)
        assert img.patient_id == r["patient_id"]


def _profile_width(img: np.ndarray, site: np.ndarray, normal: np.ndarray, spacing: float) -> float:
    """Width (mm) of the bright cortical band along the normal from the site, from the half-maximum
    crossings of a smoothed profile averaged over five parallel lines (+-0.4 mm)."""
    step = 0.05
    t = np.arange(-3, 9, step)
    tangent = np.array([-normal[1], normal[0]])
    lines = []
    for offset in np.linspace(-0.4, 0.4, 5):
        pts = site[:, None] + (np.outer(normal, t) + (tangent * offset)[:, None]) / spacing
        lines.append(map_coordinates(img, [pts[1], pts[0]], order=1))
    p = gaussian_filter1d(np.mean(lines, 0), 0.08 / step)
    outside = np.median(p[(t > -3) & (t < -1.2)])
    inside = np.median(p[(t > 6.8) & (t < 8.5)])  # trabecular bone beyond any cortex (<= 6.2 mm)
    peak_i = int(np.argmax(np.where((t > 0) & (t < 6.5), p, -np.inf)))

    def crossing(level: float, indices: range) -> float:
        for i in indices:
            if (p[i] - level) * (p[i + 1] - level) <= 0:
                return t[i] + (level - p[i]) / (p[i + 1] - p[i]) * step
        raise AssertionError("no half-maximum crossing")

    outer = crossing((outside + p[peak_i]) / 2, range(peak_i - 1, 0, -1))
    inner = crossing((inside + p[peak_i]) / 2, range(peak_i, len(t) - 1))
    return inner - outer


def test_manifest_mcw_is_visible_in_the_pixels():
    errors = []
    for seed in range(20):
        ph = phantom.render(seed, width=1000)
        tr = ph.truth
        img = ph.pixels.astype(np.float32) / 65535
        for side in ("left", "right"):
            site = np.array([tr[f"site_{side}_x"], tr[f"site_{side}_y"]])
            normal = np.array([tr[f"normal_{side}_x"], tr[f"normal_{side}_y"]])
            measured = _profile_width(img, site, normal, tr["pixel_spacing_mm"])
            errors.append(measured - tr[f"mcw_{side}_mm"])
    assert np.max(np.abs(errors)) < 0.3, np.round(errors, 3)


def test_render_is_reproducible_and_second_image_keeps_the_anatomy_truth():
    a, b = phantom.render(5, width=300), phantom.render(5, width=300)
    assert np.array_equal(a.pixels, b.pixels) and a.truth == b.truth
    assert a.pixels.dtype == np.uint16 and a.pixels.shape == (146, 300)
    assert a.mandible_mask.shape == a.pixels.shape and a.cortex_mask.dtype == np.uint8


def test_cli_synth_writes_set_and_reports(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", str(out), "--n", "4", "--seed", "2", "--width", "300"])
    assert result.exit_code == 0, result.output
    assert "oracle AUC" in result.output and "Klemetti" in result.output
    assert len(_rows(out)) == 4 and len(list(out.glob("*.png"))) == 4


@pytest.mark.parametrize("args", [["--format", "bmp"], ["--n", "0"], ["--width", "50"]])
def test_cli_synth_rejects_bad_options(tmp_path, args):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--n", "2", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, OsteopanoError)
