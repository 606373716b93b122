"""Automatic mandibular cortical width measurement (osteopano.cortex.measure) and `osteopano measure`.

Accuracy is checked on SYNTHETIC phantom images with known truth; the real samples beside the
checkout are checked for plausibility only (no truth exists for them).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from osteopano.cli import app
from osteopano.cortex.measure import CortexMeasurement, draw_overlay, measure
from osteopano.errors import OsteopanoError
from osteopano.io.images import from_array, read_image
from osteopano.phantom import generate as phantom
from osteopano.phantom.distractors import Distractors

N_PHANTOM = 16
WIDTH = 1100
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ABDI = SHARED / "real-masks" / "abdi-dev"


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    """16 synthetic images (width 1100) with their manifest rows, generated once: the CLEAN phantom
    (distractors off), a known-truth check of the measurement itself. The harder phantom with real
    radiographs' difficulties is measured by benchmarks/measure_accuracy.py."""
    root = tmp_path_factory.mktemp("cortex-phantom")
    phantom.generate(root, N_PHANTOM, seed=123, width=WIDTH, progress=False, distractors=Distractors.none())
    with (root / "manifest.csv").open(newline="") as fh:
        return root, list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def phantom_results(phantom_set) -> list[tuple[dict[str, str], CortexMeasurement]]:
    root, rows = phantom_set
    return [(r, measure(read_image(root / r["path"]), pixel_spacing_mm=float(r["pixel_spacing_mm"])))
            for r in rows]


def test_phantom_every_side_located_and_accurate(phantom_results):
    errors = []
    for row, m in phantom_results:
        assert m.spacing_source == "argument"
        for side in m.sides():
            assert side.located, f"{row['path']} {side.side} side not located"
            errors.append(abs(side.mcw_mm - float(row[f"mcw_{side.side}_mm"])))
    assert len(errors) == 2 * N_PHANTOM
    assert np.median(errors) <= 0.3, f"median abs MCW error {np.median(errors):.3f} mm"


def test_phantom_sides_and_sites_match_truth(phantom_results):
    """`.right` is the patient's right = the image's left half; sites land near the true sites."""
    dists = []
    for row, m in phantom_results:
        spacing = float(row["pixel_spacing_mm"])
        assert m.right.site_xy[0] < WIDTH / 2 < m.left.site_xy[0]
        for side in m.sides():
            true_xy = np.array([float(row[f"site_{side.side}_x"]), float(row[f"site_{side.side}_y"])])
            dists.append(np.hypot(*(np.array(side.site_xy) - true_xy)) * spacing)
            assert side.site_method in ("mental_foramen", "proportion")
            true_n = np.array([float(row[f"normal_{side.side}_x"]), float(row[f"normal_{side.side}_y"])])
            assert np.dot(true_n, side.normal) > 0.95  # both point from the border into the bone
    assert np.median(dists) < 3.0, f"median site distance {np.median(dists):.1f} mm"


def test_phantom_quality_decision_and_klemetti(phantom_results):
    for row, m in phantom_results:
        assert 0.0 <= m.confidence <= 1.0
        assert m.quality in ("ok", "low", "failed")
        assert m.klemetti_estimate in ("C1", "C2", "C3")  # experimental, never in the decision
        if m.quality != "failed":
            assert m.decision == (m.mcw_mm < 3.0)
    assert sum(m.quality == "ok" for _, m in phantom_results) >= 0.8 * N_PHANTOM
    # Eroded classes have higher erosion scores than C1 on average (synthetic truth).
    score = {c: [np.mean([s.erosion_score for s in m.sides()]) for r, m in phantom_results if r["klemetti"] == c]
             for c in ("C1", "C3")}
    if score["C1"] and score["C3"]:
        assert np.mean(score["C3"]) > np.mean(score["C1"])


def test_row_and_json_records(phantom_set, phantom_results):
    row, m = phantom_results[0]
    flat = m.to_row()
    assert flat["mcw_right_mm"] == pytest.approx(m.right.mcw_mm, abs=0.01)
    assert not any(isinstance(v, (list, dict)) for v in flat.values())
    rec = json.loads(json.dumps(m.to_json()))
    border = np.array(rec["side_left"]["border"])
    assert border.ndim == 2 and border.shape[1] == 2
    length_mm = np.sum(np.hypot(*np.diff(border, axis=0).T)) * float(row["pixel_spacing_mm"])
    assert 0.7 < length_mm / (len(border) - 1) < 1.4  # about one point per mm
    assert len(rec["side_left"]["endosteal"]) > 10


def test_threshold_sets_decision(phantom_set):
    root, rows = phantom_set
    image = read_image(root / rows[0]["path"])
    spacing = float(rows[0]["pixel_spacing_mm"])
    m = measure(image, pixel_spacing_mm=spacing, threshold_mm=100.0)
    assert m.decision is True and m.threshold_mm == 100.0
    assert measure(image, pixel_spacing_mm=spacing, threshold_mm=0.5).decision is False


def test_dicom_spacing_is_used(tmp_path):
    phantom.generate(tmp_path, 2, seed=5, fmt="dicom", width=1000, progress=False, distractors=Distractors.none())
    with (tmp_path / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        m = measure(read_image(tmp_path / row["path"]))
        assert m.spacing_source == "file"
        assert m.pixel_spacing_mm == pytest.approx(float(row["pixel_spacing_mm"]), rel=1e-4)
        located = [s for s in m.sides() if s.located]
        assert located, m.notes
        for s in located:
            assert abs(s.mcw_mm - float(row[f"mcw_{s.side}_mm"])) < 0.5


def test_argument_overrides_file_spacing(phantom_set):
    root, rows = phantom_set
    image = from_array(read_image(root / rows[0]["path"]).pixels, pixel_spacing_mm=0.2)
    assert measure(image).spacing_source == "file"
    m = measure(image, pixel_spacing_mm=0.1)
    assert m.spacing_source == "argument" and m.pixel_spacing_mm == 0.1
    with pytest.raises(OsteopanoError, match="spacing"):
        measure(image, pixel_spacing_mm=-1.0)


@pytest.mark.parametrize("variant", ["upside_down", "top_half", "left_half", "noise", "tiny", "flat"])
def test_bad_images_are_flagged_not_crashing(phantom_set, variant):
    root, rows = phantom_set
    pixels = read_image(root / rows[1]["path"]).pixels
    h, w = pixels.shape
    arr = {
        "upside_down": pixels[::-1],
        "top_half": pixels[: h // 2],
        "left_half": pixels[:, : w // 2],
        "noise": np.random.default_rng(0).random((h, w), dtype=np.float32),
        "tiny": pixels[::40, ::40],
        "flat": np.full((200, 400), 0.5, np.float32),
    }[variant]
    m = measure(from_array(np.ascontiguousarray(arr)), pixel_spacing_mm=float(rows[1]["pixel_spacing_mm"]))
    assert m.quality in ("low", "failed"), (variant, m.quality, m.confidence)
    assert m.confidence < 0.6
    _assert_failed_sides_carry_nothing(m)
    overlay = draw_overlay(from_array(np.ascontiguousarray(arr)), m)
    assert overlay.shape == (*arr.shape, 3) and overlay.dtype == np.uint8


def _assert_failed_sides_carry_nothing(m: CortexMeasurement) -> None:
    for side in m.sides():
        if not side.located:
            assert side.quality == "failed" and side.reason, (side.side, side.quality, side.reason)
            assert side.mcw_mm is None and side.mcw_px is None and side.klemetti_estimate is None
            assert side.erosion_score is None and side.pmi is None
    if m.quality == "failed":
        assert m.mcw_mm is None and m.mcw_px is None and m.decision is None and m.klemetti_estimate is None


def _real_files(real_samples: Path) -> list[Path]:
    """Every full-resolution real sample (~0.1 mm/px; the 512 px ufba set is squashed, spacing unknown)."""
    files = sorted(p for sub in ("native", "dc1000-more") for p in (real_samples / sub).glob("*.png"))
    if not files:
        pytest.skip(f"no full-resolution real samples under {real_samples}")
    return files


def test_real_samples_located_on_both_sides(real_samples, tmp_path):
    """Every full-resolution real sample: located sides have plausible widths at 0.1 mm/px and sit
    on their own half; at least 90 % of sides are located (the rest say why; target: all)."""
    files = _real_files(real_samples)
    located = 0
    for f in files:
        image = read_image(f)
        m = measure(image, pixel_spacing_mm=0.1)
        _assert_failed_sides_carry_nothing(m)
        assert m.quality != "failed", f"{f.name}: {m.notes}"
        for side in m.sides():
            if not side.located:
                continue
            located += 1
            assert 1.5 <= side.mcw_mm <= 7.5, f"{f.name}: {side.side} width {side.mcw_mm:.2f} mm"
            assert side.site_xy[1] > 0.5 * image.pixels.shape[0]
            assert 20.0 <= side.site_distance_mm <= 70.0
            assert side.site_method in ("mental_foramen", "proportion")
        if m.right.located and m.left.located:
            assert m.right.site_xy[0] < m.left.site_xy[0], f"{f.name}: sides swapped"
    assert located >= 0.9 * 2 * len(files), f"only {located} of {2 * len(files)} sides located"
    overlay = draw_overlay(image, m)
    out = tmp_path / "overlay.png"
    assert cv2.imwrite(str(out), overlay) and cv2.imread(str(out)).shape == (*image.pixels.shape, 3)


def _mask_edge(mask: np.ndarray) -> np.ndarray:
    """Lowest pixel of the largest mask component per column (nan where none)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask > 0)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    comp = lab == 1 + int(np.argmax(sizes))
    low = comp.shape[0] - 1 - np.argmax(comp[::-1], axis=0)
    return np.where(comp.any(axis=0), low, np.nan).astype(float)


def test_abdi_border_within_2mm_of_expert_edge():
    if not (ABDI / "images").is_dir():
        pytest.skip(f"expert-outlined real radiographs not found at {ABDI} (they live beside the checkout)")
    files = sorted((ABDI / "images").glob("*.png"))[:4]
    for f in files:
        edge = _mask_edge(cv2.imread(str(ABDI / "mandible-expert1" / f.name), cv2.IMREAD_GRAYSCALE))
        m = measure(read_image(f), pixel_spacing_mm=0.1)
        _assert_failed_sides_carry_nothing(m)
        for side in m.sides():
            assert side.located, f"{f.name}: {side.side} not located ({side.reason})"
            x = side.border[:, 0]
            assert np.ptp(x) * 0.1 > 40, f"{f.name}: {side.side} border only {np.ptp(x) * 0.1:.0f} mm long"
            cols = np.round(x).astype(int)
            dist = np.abs(side.border[:, 1] - edge[cols]) * 0.1
            assert np.nanmedian(dist) <= 2.0, f"{f.name}: {side.side} border {np.nanmedian(dist):.2f} mm off"
            site_off = abs(side.site_xy[1] - edge[round(side.site_xy[0])]) * 0.1
            assert site_off <= 2.0, f"{f.name}: {side.side} site {site_off:.2f} mm off the border"


def test_one_side_crop_gives_one_side_and_a_reason(real_samples):
    f = _real_files(real_samples)[0]
    pixels = read_image(f).pixels
    w = pixels.shape[1]
    crop = np.ascontiguousarray(pixels[:, : int(0.55 * w)])  # the patient's right side and the chin only
    m = measure(from_array(crop), pixel_spacing_mm=0.1)
    _assert_failed_sides_carry_nothing(m)
    assert m.right.located and not m.left.located
    assert m.left.reason and "left" in m.left.reason and "not found" in m.left.reason
    assert m.quality == "low" and m.left.reason in "; ".join(m.notes)
    assert m.mcw_mm == pytest.approx(m.right.mcw_mm)


def test_pixel_spacing_does_not_move_the_trace(real_samples):
    """Widths in px and PMI only without a spacing; a different spacing rescales mm, nothing else."""
    f = _real_files(real_samples)[0]
    pixels = read_image(f).pixels
    unknown = measure(from_array(pixels))
    assert unknown.spacing_source == "unknown" and unknown.pixel_spacing_mm is None
    assert unknown.mcw_mm is None and unknown.decision is None
    assert "pixel spacing unknown" in "; ".join(unknown.notes)
    a, b = measure(from_array(pixels), pixel_spacing_mm=0.1), measure(from_array(pixels), pixel_spacing_mm=0.13)
    for s0, sa, sb in zip(unknown.sides(), a.sides(), b.sides()):
        assert s0.located and s0.mcw_mm is None and s0.mcw_px > 0 and s0.site_distance_mm is None
        assert s0.mcw_px == pytest.approx(sa.mcw_px) and s0.mcw_px == pytest.approx(sb.mcw_px)
        assert s0.site_xy == pytest.approx(sa.site_xy) and s0.site_xy == pytest.approx(sb.site_xy)
        assert sb.mcw_mm == pytest.approx(sa.mcw_mm * 1.3, rel=1e-6)
        assert sa.site_distance_mm == pytest.approx(sa.site_distance_px * 0.1)
    implausible = measure(from_array(pixels), pixel_spacing_mm=0.3)
    assert implausible.quality == "low" and "implausible" in "; ".join(implausible.notes)


def test_real_ufba_unknown_spacing(real_samples):
    files = sorted((real_samples / "ufba-512").glob("*.jpg"))
    if not files:
        pytest.skip(f"no ufba-512 samples under {real_samples}")
    for f in files[:3]:
        m = measure(read_image(f))
        _assert_failed_sides_carry_nothing(m)
        assert m.spacing_source == "unknown" and m.pixel_spacing_mm is None
        assert m.mcw_mm is None and m.decision is None
        if m.quality != "failed":
            assert m.mcw_px is not None and m.mcw_px > 0


def test_pmi_on_phantoms_with_known_foramen(phantom_results):
    """PMI = width / height of the foramen's lower edge above the border (scale-free), where found.
    Truth: the manifest's foramen centre and site; the phantom's foramen is ~1.2 mm high (half). The
    width is the tool's own (its accuracy is the other tests'; on a faint cortex it can be far off)."""
    checked = 0
    for row, m in phantom_results:
        spacing = float(row["pixel_spacing_mm"])
        for side in m.sides():
            if side.site_method != "mental_foramen" or not side.located:
                assert side.pmi is None or side.site_method == "mental_foramen"
                continue
            if side.pmi is None:
                continue  # the site moved off the foramen: no PMI (said in the reason)
            foramen = np.array([float(row[f"foramen_{side.side}_x"]), float(row[f"foramen_{side.side}_y"])])
            site = np.array([float(row[f"site_{side.side}_x"]), float(row[f"site_{side.side}_y"])])
            expected = side.mcw_mm / (np.hypot(*(foramen - site)) * spacing - 1.2)
            assert side.pmi == pytest.approx(expected, rel=0.25), (row["path"], side.side)
            checked += 1
    assert checked >= 2, f"the foramen was found on only {checked} phantom sides"


def _phantom_folder(phantom_set, tmp_path: Path, n: int = 3) -> Path:
    """A folder with n phantom PNGs, their manifest and one corrupt image."""
    root, rows = phantom_set
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows[:n]:
            (folder / r["path"]).write_bytes((root / r["path"]).read_bytes())
            writer.writerow(r)
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def test_cli_measure_csv(phantom_set, tmp_path):
    folder = _phantom_folder(phantom_set, tmp_path)
    out, ov = tmp_path / "res.csv", tmp_path / "ov"
    result = CliRunner().invoke(app, ["measure", str(folder), "--out", str(out), "--overlays", str(ov)])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    broken = [r for r in rows if r["path"].endswith("broken.png")]
    assert len(broken) == 1 and broken[0]["error"]
    good = [r for r in rows if not r["error"]]
    assert all(r["spacing_source"] == "manifest" and float(r["mcw_mm"]) > 0 for r in good)
    assert sorted(p.name for p in ov.iterdir()) == sorted(Path(r["path"]).name.replace(".", "_") + "_cortex.png" for r in good)


def test_cli_measure_jsonl_and_spacing_option(phantom_set, tmp_path):
    folder = _phantom_folder(phantom_set, tmp_path, n=1)
    out = tmp_path / "res.jsonl"
    result = CliRunner().invoke(app, ["measure", str(folder), "--out", str(out), "--pixel-spacing", "0.2",
                                      "--threshold-mm", "2.5"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2
    rec = next(r for r in records if not r["error"])
    assert rec["spacing_source"] == "option" and rec["pixel_spacing_mm"] == 0.2 and rec["threshold_mm"] == 2.5
    for side in ("side_right", "side_left"):
        assert len(rec[side]["border"]) > 20 and len(rec[side]["site_xy"]) == 2


def test_cli_nothing_readable_is_an_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(app, ["measure", str(bad)])
    assert result.exit_code != 0
    assert isinstance(result.exception, OsteopanoError)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["measure", str(empty)])
    assert isinstance(result.exception, OsteopanoError) and "no images" in str(result.exception)


@pytest.mark.parametrize("seed", [2, 5, pytest.param(7, marks=pytest.mark.xfail(strict=True, reason=(
    "known failure (issue 12): phantom 7's left border, 1.9 mm above the frame, merges with the frame's "
    "edge; the trace takes an edge 4 mm inside the bone there and the side is located (rated low) 4 mm "
    "off the border")))])
def test_chin_hidden_under_a_bright_frame_or_cut_off_gives_no_width_where_the_site_is_hidden(seed):
    """Real DC1000 images have a bright unexposed frame along the bottom; a low chin can run into it,
    or off the image's bottom edge. The trace then counts the frame (or the bottom edge) as outside
    the picture instead of climbing over the teeth to get round the hidden chin. A side whose site
    is hidden is not located and says so: a width read from the nearest visible border would be
    made up. Every located side's site is on the border. On these wide, flat chins the right sites lie 0.4-1.0 mm above the chin's lowest point
    (1.5-2.1 mm under the frame) and the left ones 3.9-4.4 mm (1.4-1.9 mm above the frame; cut off by
    the 8 mm cut). A site less than 1 mm into the frame or off the image may be measured on the nearest
    border the tool's own site estimate finds, never off the border. Seeds: the first three phantoms
    whose cortex stands out (cortex_visibility >= 0.8)."""
    ph = phantom.render(seed, width=1100, distractors=Distractors.none())
    assert ph.truth["cortex_visibility"] >= 0.8
    img = ph.pixels.astype(np.float32)
    img = (img - img.min()) / np.ptp(img)
    mm = ph.pixel_spacing_mm
    chin_y = float(ph.border_px[:, 1].max())
    top = int(round(chin_y - 2.5 / mm))  # the frame hides the lowest 2.5 mm of the chin
    rng = np.random.default_rng(seed)
    framed = img.copy()
    framed[top:] = 0.97 + 0.01 * rng.standard_normal((img.shape[0] - top, img.shape[1]))
    cases = [("frame", framed, top)] + [(f"cut {cut} mm", img[: int(round(chin_y - cut / mm))],
                                         int(round(chin_y - cut / mm))) for cut in (5, 8)]
    for kind, picture, picture_end in cases:
        m = measure(from_array(np.clip(picture, 0, 1)), pixel_spacing_mm=mm)
        for s in m.sides():
            site_y = ph.truth[f"site_{s.side}_y"]
            hidden = site_y >= picture_end + 1.0 / mm  # the site at least 1 mm into the frame / off the image
            if hidden:
                assert not s.located and s.mcw_mm is None, (seed, kind, s.side, s.mcw_mm)
                assert "below the picture" in s.reason, (seed, kind, s.side, s.reason)
            elif s.located:
                d = np.min(np.hypot(*(ph.border_px - np.asarray(s.site_xy)).T)) * mm
                assert d <= 2.0, (seed, kind, s.side, d)
            else:
                assert s.mcw_mm is None and s.reason, (seed, kind, s.side)


@pytest.mark.parametrize("seed", [3, 5])
def test_a_tilted_head_places_the_sites_from_the_symmetry_axis_not_the_lowest_point(seed):
    """A head tilted 6 degrees moves the lowest point of the wide, flat chin 25-40 mm to one side; the
    sites must still lie below the foramina (the symmetry axis is the midline on a full panoramic
    field), and the result says the traced chin is off the axis. Before this, the sites were placed
    from the lowest point and lay 16-42 mm from the true ones on these phantoms."""
    base = phantom.render(seed, width=WIDTH, distractors=Distractors.none())
    acq = {k[4:]: v for k, v in base.truth.items() if k.startswith("acq_")}
    for rotation in (-6.0, 6.0):
        ph = phantom.render(seed, width=WIDTH, distractors=Distractors.none(), acquisition={**acq, "rotation_deg": rotation})
        m = measure(from_array(ph.pixels), pixel_spacing_mm=ph.pixel_spacing_mm)
        for s in m.sides():
            assert s.located, (rotation, s.side, s.reason)
            true = np.array([ph.truth[f"site_{s.side}_x"], ph.truth[f"site_{s.side}_y"]])
            assert np.hypot(*(np.asarray(s.site_xy) - true)) * ph.pixel_spacing_mm <= 2.0, (rotation, s.side)
        assert m.quality == "low" and any("symmetry axis" in n for n in m.notes), (rotation, m.notes)


@pytest.mark.parametrize("seed", [1, 3, 6])
def test_a_collimation_frame_does_not_move_the_symmetry_axis(seed):
    """The frame's inner edges are long, strong lines whose mirror axis is the middle of the exposed
    field, not the face's; with uneven frame widths they pulled the axis 4-12 mm on these phantoms
    (the same picture with and without a 6 mm frame). The axis is searched on the anatomy only."""
    from osteopano.cortex import border as cb
    from osteopano.cortex import trace as ct

    base = phantom.render(seed, width=800, distractors=Distractors.none())
    acq = {k[4:]: v for k, v in base.truth.items() if k.startswith("acq_")}
    framed = phantom.render(seed, width=800, distractors=Distractors.none(), acquisition={**acq, "frame_mm": 6.0})
    y = (base.truth["site_left_y"] + base.truth["site_right_y"]) / 2

    def axis_x(ph) -> float:
        pixels, _ = ct.normalise_both(ph.pixels.astype(np.float32))
        mid = ct.find_midline(pixels, cb.anatomy_scale(pixels.shape))
        return mid.x_at(y)

    assert abs(axis_x(framed) - axis_x(base)) * base.pixel_spacing_mm <= 1.0
