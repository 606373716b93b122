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

from osteopano.cli import app
from osteopano.errors import OsteopanoError
from osteopano.io.images import read_image
from osteopano.phantom import generate as phantom
from osteopano.phantom.distractors import Distractors
from osteopano.phantom.latent import KLEMETTI_CUTS, GraderModel, sample_patient

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
    rest = header[len(CONTRACT_PREFIX) :]
    assert tuple(rest[: len(phantom.TRUTH_COLUMNS)]) == phantom.TRUTH_COLUMNS
    assert all(c.startswith("acq_") for c in rest[len(phantom.TRUTH_COLUMNS) :])
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
        assert abs(float(r["acq_rotation_deg"])) <= (7 if "head_tilt" in r["distractors"] else 3)
        # the true class is the latent erosion cut; the graded one comes from a grader of the panel
        e = float(r["erosion_grade"])
        assert r["klemetti_true"] == ("C1" if e < KLEMETTI_CUTS[0] else "C2" if e < KLEMETTI_CUTS[1] else "C3")
        assert r["klemetti_grader"] in {"G1", "G2", "G3", "G4"}
        assert r["dentition"] in {"full", "partial", "edentulous", "mixed"} and 0 <= int(r["teeth_count"]) <= 32
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
    truth = ("age", "sex", "tscore", "label", "klemetti", "klemetti_true", "erosion_grade", "mcw_left_mm",
             "mcw_right_mm")  # fmt: skip
    for a, b in pairs:
        assert all(a[c] == b[c] for c in truth)
        assert a["acq_fov_mm"] != b["acq_fov_mm"]


def test_latent_model_proportions_and_imperfect_oracle():
    from sklearn.metrics import roc_auc_score

    patients = [phantom.sample_patient(s, "x") for s in np.random.SeedSequence(0).spawn(3000)]
    osteo = np.array([p.label == "osteoporosis" for p in patients])
    mcw = np.array([(p.mcw_left_mm + p.mcw_right_mm) / 2 for p in patients])
    klemetti = Counter(p.klemetti_true for p in patients)
    assert 0.28 <= osteo.mean() <= 0.42
    assert 0.38 <= klemetti["C1"] / 3000 <= 0.55 and 0.12 <= klemetti["C3"] / 3000 <= 0.28
    assert 0.75 <= roc_auc_score(osteo, -mcw) <= 0.85
    low = mcw < 3.0  # diagnostic odds ratio of MCW < 3 mm for the DXA label: about 6-8
    dor = (low & osteo).sum() * (~low & ~osteo).sum() / ((low & ~osteo).sum() * (~low & osteo).sum())
    assert 5.0 <= dor <= 10.0, dor
    by_class = {c: mcw[[p.klemetti_true == c for p in patients]].mean() for c in ("C1", "C2", "C3")}
    assert by_class["C1"] - by_class["C2"] > 0.5 and by_class["C2"] - by_class["C3"] > 0.4


def test_grader_is_noisy_like_people_and_exact_without_noise():
    from sklearn.metrics import cohen_kappa_score

    seqs = np.random.SeedSequence(1).spawn(3000)
    graded = [sample_patient(s, "x") for s in seqs]
    binary = np.array([(p.klemetti == "C1") == (p.klemetti_true == "C1") for p in graded])
    assert 0.8 <= binary.mean() <= 0.93  # the ceiling of any model's Klemetti accuracy
    g, rng = GraderModel(), np.random.default_rng(0)
    r1 = [g.read(p.erosion, rng)[0] for p in graded]
    r2 = [g.read(p.erosion, rng)[0] for p in graded]
    assert 0.3 <= cohen_kappa_score(r1, r2) <= 0.65  # two observers agree fairly to moderately
    exact = [sample_patient(s, "x", GraderModel(noise_sd=0.0, bias_sd=0.0)) for s in seqs[:300]]
    assert all(p.klemetti == p.klemetti_true for p in exact)
    assert [p.mcw_left_mm for p in exact] == [p.mcw_left_mm for p in graded[:300]]  # grading changes nothing else


def test_truth_json_border_foramina_and_new_masks(small_set):
    import json

    for r in _rows(small_set)[:6]:
        stem = Path(r["path"]).stem
        spacing = float(r["pixel_spacing_mm"])
        border = phantom.decode_polyline(r["border_px"])
        truth = json.loads((small_set / "masks" / f"{stem}_truth.json").read_text())
        fine = np.array(truth["border_px"])
        assert len(fine) > 3 * len(border) > 150
        for side in ("left", "right"):
            site = np.array([float(r[f"site_{side}_x"]), float(r[f"site_{side}_y"])])
            normal = np.array([float(r[f"normal_{side}_x"]), float(r[f"normal_{side}_y"])])
            assert np.min(np.hypot(*(fine - site).T)) * spacing < 0.3  # the site is on the border
            foramen = np.array([float(r[f"foramen_{side}_x"]), float(r[f"foramen_{side}_y"])])
            up = (foramen - site) * spacing
            assert 9.5 <= up @ normal <= 15 and abs(up @ np.array([-normal[1], normal[0]])) < 0.1
        image = read_image(small_set / r["path"]).pixels
        metal = read_image(small_set / "masks" / f"{stem}_metal.png").pixels > 0.5
        teeth = read_image(small_set / "masks" / f"{stem}_teeth.png").pixels > 0.5
        assert (metal & ~teeth).sum() <= 0.05 * max(1, metal.sum())  # metal sits on teeth and implants
        if int(r["metal_count"]) and metal.sum() > 5:
            assert np.median(image[metal]) > 0.97  # restorations saturate the detector
        if int(r["teeth_count"]) > 10:
            assert teeth.sum() > 0.01 * teeth.size


def test_distractor_switches_are_independent_and_validated():
    clean = phantom.render(7, width=400, distractors=Distractors.none())
    assert clean.truth["distractors"] == "" and clean.truth["burned_in"] == ""
    always = Distractors().with_(hyoid=1.0, side_letter=1.0)
    never = Distractors().with_(hyoid=0.0)
    a, b = phantom.render(7, width=400, distractors=always), phantom.render(7, width=400, distractors=never)
    assert "hyoid" in a.truth["distractors"].split(";") and "hyoid" not in b.truth["distractors"].split(";")
    assert a.truth["burned_in"] in {"L", "R"} or a.truth["burned_in"].split()[0] in {"L", "R"}
    same = ("mcw_left_mm", "klemetti", "site_left_x", "site_left_y", "acq_fov_mm", "acq_exposure")
    assert all(a.truth[c] == b.truth[c] for c in same)  # switching the hyoid leaves the rest alone
    assert not np.array_equal(a.pixels, b.pixels)
    with pytest.raises(OsteopanoError, match="unknown distractor"):
        Distractors().with_(dragons=0.5)
    with pytest.raises(OsteopanoError, match="probability"):
        Distractors.parse(["hyoid=2"])
    assert Distractors.parse(["all=0", "tongue=1"]).tongue == 1.0 and Distractors.parse(["all=0"]).hyoid == 0.0


def test_jpeg_export_is_8_bit_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        phantom.generate(out, 2, seed=4, fmt="jpeg", width=400, progress=False, workers=1)
    assert _digests(a) == _digests(b)
    for r in _rows(a):
        assert r["path"].endswith(".jpg")
        img = read_image(a / r["path"])
        assert img.bit_depth == 8 and img.pixels.shape == (195, 400)


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


def _profile_width(img: np.ndarray, site: np.ndarray, normal: np.ndarray, spacing: float,
                   step_only: bool = False) -> float:
    """Width (mm) of the bright cortical band along the normal from the site, on a smoothed profile
    averaged over five parallel lines (+-0.4 mm): from the periosteal edge (the steepest rise within
    1.5 mm of the site: the rounded base makes the bone rise steeply there, then gradually, so the
    outer half-maximum lies inside the bone) to the endosteal half-maximum crossing."""
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

    if step_only:  # the endosteal step: the band's peak over the trabecular bone, over the border's rise
        return float((p[peak_i] - inside) / max(p[peak_i] - outside, 1e-9))
    grad = np.gradient(p, step)
    near = np.nonzero(np.abs(t) <= 1.5)[0]
    outer = float(t[near[np.argmax(grad[near])]])
    inner = crossing((inside + p[peak_i]) / 2, range(peak_i, len(t) - 1))
    return inner - outer


def test_manifest_mcw_is_visible_in_the_pixels():
    """A plain profile reading recovers the manifest's MCW. Since the rounded basal border (issue 11)
    the band is not flat-topped: the bone steps up at the border, then rises over 4-6 mm, so this
    simple reading runs ~0.15-0.2 mm narrow (the tracer does better: benchmarks/measure_accuracy.py);
    at width 1000 (0.3 mm/px) it was too coarse for the new profile, hence 1600. Only on patients
    whose cortex stands out (``cortex_visibility`` >= 0.8; where it hardly does, a half-maximum
    reading has nothing to hold on to, as on many real OPGs: the next test) and is not heavily eroded
    (erosion grade < 2: the residues beyond the margin of a C3 cortex carry a plain reading inwards)."""
    measured, truth = [], []
    for seed in range(60):
        ph = phantom.render(seed, width=1600)
        tr = ph.truth
        if tr["cortex_visibility"] < 0.8 or tr["erosion_grade"] >= 2.0:
            continue
        if len(truth) >= 24:
            break
        img = ph.pixels.astype(np.float32) / 65535
        for side in ("left", "right"):
            site = np.array([tr[f"site_{side}_x"], tr[f"site_{side}_y"]])
            normal = np.array([tr[f"normal_{side}_x"], tr[f"normal_{side}_y"]])
            measured.append(_profile_width(img, site, normal, tr["pixel_spacing_mm"]))
            truth.append(tr[f"mcw_{side}_mm"])
    measured, truth = np.array(measured), np.array(truth)
    errors = np.abs(measured - truth)
    assert np.median(errors) < 0.3 and np.percentile(errors, 90) < 0.5 and errors.max() < 0.9, np.round(errors, 3)
    assert np.corrcoef(measured, truth)[0, 1] > 0.9, np.round(np.stack([measured, truth]), 2)


def test_cortex_visibility_varies_between_patients_and_sets_the_endosteal_step():
    """Issue 11: on many real OPGs the profile up from the border only rises to a plateau (the old
    tracer's band reading found no endosteal drop on 28 % of real abdi-dev profiles, 11 % of the
    phantom's before this factor, 22 % after). The factor spreads between patients, and the drawn
    endosteal step follows it."""
    vis, steps = [], []
    for seed in range(16):
        ph = phantom.render(seed, width=1200)
        tr = ph.truth
        img = ph.pixels.astype(np.float32) / 65535
        site = np.array([tr["site_left_x"], tr["site_left_y"]])
        normal = np.array([tr["normal_left_x"], tr["normal_left_y"]])
        vis.append(tr["cortex_visibility"])
        steps.append(_profile_width(img, site, normal, tr["pixel_spacing_mm"], step_only=True))
    vis = np.array(vis)
    assert vis.min() < 0.6 and vis.max() > 1.1, vis
    assert np.corrcoef(vis, steps)[0, 1] > 0.5, np.round(np.stack([vis, steps]), 2)


def test_render_is_reproducible_and_second_image_keeps_the_anatomy_truth():
    a, b = phantom.render(5, width=300), phantom.render(5, width=300)
    assert np.array_equal(a.pixels, b.pixels) and a.truth == b.truth
    assert a.pixels.dtype == np.uint16 and a.pixels.shape == (146, 300)
    assert a.mandible_mask.shape == a.pixels.shape and a.cortex_mask.dtype == np.uint8


def test_cli_synth_writes_set_and_reports(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", str(out), "--n", "4", "--seed", "2", "--width", "300"])
    assert result.exit_code == 0, result.output
    assert "oracle AUC" in result.output and "Klemetti" in result.output and "grader vs true" in result.output
    assert len(_rows(out)) == 4 and len(list(out.glob("*.png"))) == 4


@pytest.mark.parametrize("args", [["--format", "bmp"], ["--n", "0"], ["--width", "50"],
                                  ["--distractor", "hyoid"], ["--distractor", "nose=1"], ["--grader-noise", "-1"]])
def test_cli_synth_rejects_bad_options(tmp_path, args):
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--n", "2", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, OsteopanoError)


def test_border_polyline_encoding_round_trips():
    pts = np.array([[10.04, 20.0], [11.5, 19.25], [13.0, 18.5]])
    text = phantom.encode_polyline(pts)
    assert text == "10.0,20.0;11.5,19.2;13.0,18.5" or text == "10.0,20.0;11.5,19.3;13.0,18.5"
    assert np.allclose(phantom.decode_polyline(text), pts, atol=0.051)
    assert phantom.decode_polyline("").shape == (0, 2)


def test_proportions_are_those_of_a_real_opg():
    """Like a real OPG (e.g. the DC1000 images): the mandible fills most of the width, the rami
    rise to condyles in the upper third, the two arches meet near mid-height, teeth touch."""
    angles = []
    for seed in range(6):
        ph = phantom.render(seed, width=400, distractors=Distractors.none())
        h, w = ph.pixels.shape
        mand, teeth = ph.mandible_mask > 0, ph.teeth_mask > 0
        cols = np.flatnonzero(mand.any(0))
        assert cols.min() < 0.2 * w and cols.max() > 0.8 * w, (seed, cols.min() / w, cols.max() / w)
        angles.append([ph.border_px[0, 0] / w, ph.border_px[-1, 0] / w])  # the gonial angles
        for part in (mand[:, : int(0.25 * w)], mand[:, int(0.75 * w) :]):  # the rami, with the condyles
            assert np.flatnonzero(part.any(1)).min() < 0.33 * h
        rows = np.flatnonzero(teeth.any(1))
        occlusal = np.median([np.mean(np.flatnonzero(teeth[:, c])) for c in range(int(0.4 * w), int(0.6 * w))
                              if teeth[:, c].any()])  # fmt: skip
        assert 0.4 * h < occlusal < 0.65 * h and rows.min() < 0.4 * h and rows.max() > 0.6 * h
        # a full dentition: crowns next to each other leave no gap between the canines
        row = int(round(occlusal))
        band = teeth[max(row - 3, 0) : row + 4, int(0.42 * w) : int(0.58 * w)].any(0)
        assert band.mean() > 0.95, (seed, band.mean())
    angles = np.array(angles)  # on real OPGs about 12-14 % and 86-88 % of the width
    assert np.all(angles[:, 0] < 0.2) and np.all(angles[:, 1] > 0.8)
    assert angles[:, 0].mean() < 0.16 and angles[:, 1].mean() > 0.84, np.round(angles, 3)


def test_submandibular_tissue_edge_is_weaker_than_the_border_as_on_real_opgs():
    """Below the mandible a real OPG shows soft tissue whose lower edge is much weaker than the
    border (abdi-dev: median 0.15 of the border's step, p90 0.42; benchmarks/phantom_vs_real.py).
    The phantom's used to be a bone-bright lobe stronger than the border (median 0.51, p90 1.34)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "phantom_vs_real.py"
    spec = importlib.util.spec_from_file_location("phantom_vs_real", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    on = Distractors.none().with_(neck_soft_tissue=1.0)
    ratios = []
    for seed in range(8):
        ph = phantom.render(seed, width=1000, distractors=on)
        img = ph.pixels.astype(np.float32)
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-9)
        b = ph.border_px
        ey = np.interp(np.arange(img.shape[1]), b[:, 0], b[:, 1])
        cols = bench._body_cols(b[:, 0].min(), b[:, 0].max(), 6)
        ratios.append(bench.edge_ratio(img, ey, cols, ph.pixel_spacing_mm))
    ratios = np.array([r for r in ratios if r is not None])
    assert ratios.size >= 6
    assert np.median(ratios) < 0.35 and ratios.max() < 0.95, np.round(ratios, 2)


def test_border_levels_are_those_of_a_real_opg():
    """Around the inferior border a real OPG's mandible is mid-dark among teeth, skull and spine, the
    cortex right at the border is no brighter than the bone 6-10 mm up, and the border step is faint
    (abdi-dev medians, fraction of the p1-p99 range: bone 0.31, cortex 0.23, tissue below 0.09 / 0.06;
    benchmarks/phantom_vs_real.py). The phantom's used to be 0.54 / 0.61 / 0.19 / 0.12."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "phantom_vs_real.py"
    spec = importlib.util.spec_from_file_location("phantom_vs_real", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    levels = []
    for seed in range(10):
        ph = phantom.render(seed, width=1000)
        img = ph.pixels.astype(np.float32)
        img = (img - img.min()) / max(float(np.ptp(img)), 1e-9)
        b = ph.border_px
        ey = np.interp(np.arange(img.shape[1]), b[:, 0], b[:, 1])
        v = bench.levels(img, ey, bench._body_cols(b[:, 0].min(), b[:, 0].max(), 6), ph.pixel_spacing_mm)
        if v is not None:
            levels.append(v)
    assert len(levels) >= 7
    bone, cortex, near, far = np.median(levels, axis=0)
    assert 0.2 < bone < 0.42 and cortex < bone and 0.05 < cortex - near < 0.3 and near < 0.14 and far < near, (
        np.round([bone, cortex, near, far], 3))


def test_site_visible_says_whether_the_cortex_at_the_site_is_in_the_picture():
    """``site_*_visible`` is 1 when the site's cortex (1 mm below the border to 1 mm above the
    endosteal margin) lies in the exposed picture, 0 under the collimation frame or off the image:
    the benchmark expects no width there. A jaw moved down until the sites leave the image reads 0
    on both sides; the same jaw in the field reads 1; the frame alone, once wide enough to reach the
    sites, hides them too."""
    base = phantom.render(4, width=600, distractors=Distractors.none())
    acq = {k[4:]: v for k, v in base.truth.items() if k.startswith("acq_")}
    assert (base.truth["site_left_visible"], base.truth["site_right_visible"]) == (1, 1)
    mm = base.pixel_spacing_mm
    lowest = max(base.truth["site_left_y"], base.truth["site_right_y"])
    below = (base.pixels.shape[0] - lowest) * mm  # how far the sites lie above the image's bottom, in mm
    moved = phantom.render(4, width=600, distractors=Distractors.none(),
                           acquisition={**acq, "shift_y_mm": acq["shift_y_mm"] + below + 3.0})
    assert (moved.truth["site_left_visible"], moved.truth["site_right_visible"]) == (0, 0)
    framed = phantom.render(4, width=600, distractors=Distractors.none(),
                            acquisition={**acq, "frame_mm": 3.0 * below})
    assert (framed.truth["site_left_visible"], framed.truth["site_right_visible"]) == (0, 0)
