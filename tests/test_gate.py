"""osteopano.prepare.gate: real radiographs and phantoms pass, every non-radiograph kind is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import NOT_RADIOGRAPHS, phantom_u8

from osteopano.errors import ImageReadError
from osteopano.io.images import IMAGE_SUFFIXES, from_array, read_image
from osteopano.prepare import gate
from osteopano.prepare.gate import check_radiograph

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_FOLDERS = [SHARED / "real-samples", SHARED / "real-masks" / "abdi-dev" / "images"]


def _real_files() -> list[Path]:
    return sorted(p for folder in REAL_FOLDERS if folder.is_dir() for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@pytest.fixture(scope="module")
def real_files() -> list[Path]:
    files = _real_files()
    if not files:
        pytest.skip(f"no real radiographs under {SHARED} (they live beside the checkout)")
    return files


def _refused(verdict: gate.GateVerdict) -> None:
    assert not verdict.passed
    assert verdict.reason.startswith("not a dental panoramic radiograph: ")
    assert "\n" not in verdict.reason and verdict.failed is not None


def test_every_real_radiograph_passes(real_files):
    refused = {}
    for path in real_files:
        verdict = check_radiograph(read_image(path))
        if not verdict.passed:
            refused[path.name] = verdict.reason
    assert refused == {}, f"{len(refused)} of {len(real_files)} real radiographs refused"


@pytest.mark.parametrize("width", [200, 256, 800, 1600])
def test_phantoms_pass_at_every_test_width(width):
    from osteopano.phantom.generate import render

    for seed in (3, 4):
        verdict = check_radiograph(from_array(render(seed, width=width).pixels))
        assert verdict.passed, verdict.reason


@pytest.mark.parametrize("kind", sorted(NOT_RADIOGRAPHS))
def test_non_radiographs_are_refused_with_one_line(kind, tmp_path):
    path = NOT_RADIOGRAPHS[kind](tmp_path)
    _refused(check_radiograph(read_image(path)))


@pytest.mark.parametrize("change", ["inverted", "rotated", "upside-down", "teeth-crop", "left-half", "noise"])
def test_real_radiograph_made_wrong_is_refused(real_files, change):
    rng = np.random.default_rng(0)
    for path in real_files[:: max(1, len(real_files) // 6)]:
        p = read_image(path).pixels
        h, w = p.shape
        altered = {
            "inverted": lambda: 1.0 - p,
            "rotated": lambda: np.rot90(p),
            "upside-down": lambda: p[::-1],
            "teeth-crop": lambda: p[int(0.3 * h):int(0.6 * h), int(0.35 * w):int(0.65 * w)],
            "left-half": lambda: p[:, : w // 2],
            "noise": lambda: rng.random(p.shape, dtype=np.float32),
        }[change]()
        verdict = check_radiograph(np.ascontiguousarray(altered))
        _refused(verdict)


def test_squashed_square_panoramic_is_judged_unsquashed():
    import cv2

    square = cv2.resize(phantom_u8(), (512, 512), interpolation=cv2.INTER_AREA)
    verdict = check_radiograph(square)
    assert verdict.passed and verdict.checks["squashed_square"] is True


def test_colour_and_tint():
    grey = phantom_u8()
    tinted = np.stack([grey, (grey * 0.9).astype(np.uint8), (grey * 0.7).astype(np.uint8)], axis=2)
    assert check_radiograph(tinted).passed  # a uniform sepia tint is still a grey radiograph
    noisy = tinted.copy()
    noisy[..., 0] = np.random.default_rng(1).integers(0, 256, grey.shape, dtype=np.uint8)
    verdict = check_radiograph(noisy)
    assert verdict.failed == "colour"
    assert from_array(tinted).chroma < gate.MAX_CHROMA < from_array(noisy).chroma


def test_sixteen_bit_with_twelve_bit_data_passes(tmp_path):
    from osteopano.io.images import write_png16

    write_png16(tmp_path / "p12.png", (phantom_u8().astype(np.uint16) * 16))  # values < 4096
    image = read_image(tmp_path / "p12.png")
    assert image.pixels.max() < 0.07
    verdict = check_radiograph(image)
    assert verdict.passed, verdict.reason


def test_checks_are_json_ready_and_reasons_name_the_check():
    verdict = check_radiograph(phantom_u8())
    assert verdict.passed and verdict.reason is None
    json.dumps(verdict.checks)
    for key in ("aspect", "layout", "symmetry", "neighbour_corr", "teeth_detail"):
        assert key in verdict.checks
    blank = check_radiograph(np.zeros((400, 800), np.uint8))
    assert blank.failed == "blank" and "all black" in blank.reason


def test_template_is_shipped_frozen_and_its_builder_is_reproducible():
    shipped = gate._template()
    assert shipped.shape == gate.CANON and np.isfinite(shipped).all() and not shipped.flags.writeable
    assert abs(shipped.mean()) < 0.05 and 0.5 < shipped.std() < 1.0  # a mean of z-scored layouts
    np.testing.assert_array_equal(gate.build_template(), gate.build_template())
    # the shipped layout is a panoramic's: bone (mandible) brighter below the middle than the airway above
    assert shipped[40:56, 40:88].mean() > shipped[20:30, 40:88].mean()


def test_bad_array_shape_is_a_value_error():
    with pytest.raises(ValueError):
        check_radiograph(np.zeros((4, 4, 4, 4)))
    with pytest.raises(ImageReadError):
        read_image(Path("/nonexistent/none.png"))
