"""The phantom's latent patient model: age, sex, DXA T-score, endosteal erosion, cortical
widths, the true Klemetti class and the class a (noisy) human grader reads from the image.

See docs/phantom.md ("Latent model", "Klemetti grader") for the figures this mimics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osteopano.phantom.raster import child

KLEMETTI_CUTS = (0.94, 1.89)  # latent erosion thresholds C1 | C2 | C3
MCW_INTERCEPT, MCW_SLOPE, MCW_NOISE_SD = 4.75, 0.75, 0.38  # MCW = a - b * erosion + N(0, sd) mm


@dataclass(frozen=True)
class GraderModel:
    """How one observer grades the Klemetti index from a radiograph.

    The observer perceives the latent erosion with a per-reading error ``N(0, noise_sd)`` plus
    the observer's own threshold shift (a panel of ``panel`` graders, shifts ``N(0, bias_sd)``
    fixed by the panel seed, each patient read by one grader of the panel drawn at random),
    then cuts at ``KLEMETTI_CUTS``. At the defaults two graders reading the same patients agree
    with Cohen's kappa of about 0.58 (fair to moderate, as dentists do) while a grader agrees
    with the true class (C1 vs C2/C3) on about 86-88 % of patients.
    """

    noise_sd: float = 0.32
    bias_sd: float = 0.12
    panel: int = 4
    panel_seed: int = 20161

    def biases(self) -> np.ndarray:
        rng = np.random.default_rng(self.panel_seed)
        return rng.normal(0.0, self.bias_sd, self.panel)

    def read(self, erosion: float, rng: np.random.Generator) -> tuple[str, int]:
        """(Klemetti class as read, grader index) for one patient's latent erosion."""
        g = int(rng.integers(self.panel))
        return klemetti_class(erosion + self.biases()[g] + rng.normal(0.0, self.noise_sd)), g


def klemetti_class(erosion: float) -> str:
    return "C1" if erosion < KLEMETTI_CUTS[0] else "C2" if erosion < KLEMETTI_CUTS[1] else "C3"


# How much the basal cortex stands out from the bone above it differs between patients (the buccal and
# lingual cortical plates over the trabecular bone, the cortex's own mineral): on many real OPGs the
# profile up from the border only rises to a plateau, with no drop at the endosteal margin. A
# log-normal factor on the cortex's density, mean and sd of its log, clipped (docs/phantom.md).
VISIBILITY_LOG = (-0.1, 0.3)
VISIBILITY_RANGE = (0.3, 1.6)


@dataclass
class Patient:
    """Ground truth and fixed anatomy of one synthetic patient."""

    patient_id: str
    age: float
    sex: str
    tscore: float
    erosion: float  # latent endosteal erosion grade (continuous; what the pixels show)
    klemetti: str  # as read by the grader (noisy)
    mcw_right_mm: float  # patient's right = image left (x < 0)
    mcw_left_mm: float
    anatomy_seed: np.random.SeedSequence
    scale: float = 1.0
    grader: int = 0
    cortex_visibility: float = 1.0  # how much the basal cortex stands out from the bone above (x the mean)

    @property
    def label(self) -> str:
        return "osteoporosis" if self.tscore <= -2.5 else "normal"

    @property
    def klemetti_true(self) -> str:
        return klemetti_class(self.erosion)


def sample_patient(seq: np.random.SeedSequence, patient_id: str, grader: GraderModel | None = None) -> Patient:
    """Draw one patient's age, sex, T-score, erosion, Klemetti class (true and graded) and
    cortical widths."""
    truth_seq, anatomy_seq, grader_seq = child(seq, 0), child(seq, 1), child(seq, 2)
    rng = np.random.default_rng(truth_seq)
    age = float(rng.uniform(45, 85))
    sex = "F" if rng.random() < 0.8 else "M"
    mu = -1.15 - 0.05 * (age - 45) + (0.9 if sex == "M" else 0.0)
    tscore = float(np.clip(rng.normal(mu, 1.0), -5.0, 2.5))
    erosion = -0.55 * tscore + rng.normal(0, 0.7)
    width = float(np.clip(MCW_INTERCEPT - MCW_SLOPE * erosion + rng.normal(0, MCW_NOISE_SD), 1.6, 6.0))
    rng.normal(0, 0.25)  # (kept: the draw order of the earlier model, so widths stay comparable)
    asym = rng.normal(0, 0.05)
    klemetti, g = (grader or GraderModel()).read(float(erosion), np.random.default_rng(grader_seq))
    return Patient(
        patient_id=patient_id,
        age=round(age, 1),
        sex=sex,
        tscore=round(tscore, 2),
        erosion=round(float(erosion), 4),
        klemetti=klemetti,
        mcw_right_mm=round(float(np.clip(width * (1 + asym), 1.5, 6.2)), 3),
        mcw_left_mm=round(float(np.clip(width * (1 - asym), 1.5, 6.2)), 3),
        anatomy_seed=anatomy_seq,
        scale=float(rng.uniform(0.94, 1.06)),
        grader=g,
        cortex_visibility=round(float(np.clip(np.exp(rng.normal(*VISIBILITY_LOG)), *VISIBILITY_RANGE)), 3),
    )
