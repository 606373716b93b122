"""The measurement site on one side: below the mental foramen where it is visible, else at the
mandible's own proportions (a fixed fraction of the midline-to-angle distance of the body).

All lengths are anatomical (nominal) mm, see :func:`osteopano.cortex.border.anatomy_scale`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from osteopano.cortex import trace as ct

SITE_FRACTION = 0.36          # site = this fraction of the midline-to-angle distance of the traced body
SITE_RANGE_MM = (32.0, 46.0)  # ... kept within this distance from the midline (a typical foramen lies ~39 mm out)
FORAMEN_WINDOW_MM = 10.0      # the foramen is searched this far either side of the proportional site
FORAMEN_HEIGHT_MM = (6.0, 18.0)  # ... this high above the border
FORAMEN_SIGMA_MM = 1.0        # Hessian scale matched to a 2-4 mm dark oval
FORAMEN_MIN_Z = 5.0           # robust z-score a dark blob needs to count as the foramen


@dataclass
class Site:
    index: int                 # index on the trace
    method: str                # 'mental_foramen' | 'proportion'
    foramen_height_mm: float | None = None  # foramen's lower edge above the border (nominal mm)


def proportional_distance(reach_mm: float) -> float:
    """Distance of the site from the midline for a body traced ``reach_mm`` from the midline."""
    return float(np.clip(SITE_FRACTION * reach_mm, *SITE_RANGE_MM))


def find_site(pixels: np.ndarray, trace: ct.Trace, nominal_mm: float, dist_mm: np.ndarray,
              reach_mm: float) -> Site:
    """The site on ``trace`` (points ordered from the midline out, ``dist_mm`` from the midline)."""
    target = proportional_distance(reach_mm)
    fallback = int(np.argmin(np.abs(dist_mm - target)))
    found = find_foramen(pixels, trace, nominal_mm, dist_mm, target)
    if found is not None:
        return Site(found[0], "mental_foramen", found[1])
    return Site(fallback, "proportion")


def find_foramen(pixels: np.ndarray, trace: ct.Trace, nominal_mm: float, dist_mm: np.ndarray,
                 target_mm: float) -> tuple[int, float] | None:
    """(index of the border point below the mental foramen, height of the foramen's lower edge
    above the border in nominal mm), or ``None`` when no dark blob stands out clearly.

    The bone above the border is straightened (columns = border points, rows = height along the
    normal) and searched for the strongest dark blob: the smaller Hessian eigenvalue, large only
    where the intensity dips in every direction (a round hole, not the gaps between roots or the
    mandibular canal).
    """
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    cols = np.nonzero(np.abs(dist_mm - target_mm) <= FORAMEN_WINDOW_MM)[0]
    if cols.size < 10:
        return None
    step = ct.BORDER_STEP_MM
    pad = 4.0
    h = np.arange(FORAMEN_HEIGHT_MM[0] - pad, FORAMEN_HEIGHT_MM[1] + pad + 1e-9, step)
    xs = trace.xy[:, 0, None] + trace.normals[:, 0, None] * (h / nominal_mm)[None, :]
    ys = trace.xy[:, 1, None] + trace.normals[:, 1, None] * (h / nominal_mm)[None, :]
    straight = ndimage.map_coordinates(pixels, [ys.T.ravel(), xs.T.ravel()], order=1, mode="nearest")
    straight = straight.reshape(h.size, -1)
    hess = hessian_matrix(straight, sigma=FORAMEN_SIGMA_MM / step, order="rc", use_gaussian_derivatives=True)
    blob = hessian_matrix_eigvals(hess)[1]  # smaller eigenvalue; > 0 at a dark blob
    r_pad = round(pad / step)
    window = blob[r_pad:h.size - r_pad][:, cols]
    med = float(np.median(window))
    mad = float(np.median(np.abs(window - med))) * 1.4826
    if mad <= 0:
        return None
    r, c = np.unravel_index(int(np.argmax(window)), window.shape)
    z = (float(window[r, c]) - med) / mad
    if z < FORAMEN_MIN_Z:
        return None
    # Lower edge: walk down from the blob's centre until the intensity is back half-way to the
    # surrounding bone's level.
    col = ndimage.gaussian_filter1d(straight[:, cols[c]], 1.0)
    rc = r + r_pad
    lo = float(col[rc])
    around = float(np.median(straight[max(0, rc - r_pad):rc + r_pad, cols]))
    level = 0.5 * (lo + around)
    k = rc
    while k > 0 and col[k] < level:
        k -= 1
    return int(cols[c]), float(h[k])
