"""Shared test fixtures: small synthetic images and the real samples beside the checkout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "real-samples"


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Commands that configure logging (``pacs``) must not leave handlers on a test's captured stream."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def real_samples() -> Path:
    """The folder of real, unlabelled radiographs (skips the test when it is absent)."""
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not found at {REAL_SAMPLES} (they live beside the checkout)")
    return REAL_SAMPLES


@pytest.fixture
def noise_u16() -> np.ndarray:
    """A 96x128 uint16 image of seeded noise over the full 16-bit range (does not compress)."""
    return np.random.default_rng(0).integers(0, 65536, size=(96, 128), dtype=np.uint16)


@pytest.fixture(scope="session")
def screen_base(tmp_path_factory) -> Path:
    """Session folder of the tiny trained run shared by the screening, export and API tests."""
    base = tmp_path_factory.getbasetemp() / "screen"
    base.mkdir(exist_ok=True)
    return base


@pytest.fixture(scope="session")
def run(screen_base) -> Path:
    """A tiny run trained once per session (tests/screen_support.py); test modules may override it."""
    from screen_support import trained_run

    return trained_run(screen_base)
