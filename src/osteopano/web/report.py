"""The downloadable report of a web screening (HTML and PDF, in memory), from ``osteopano.render.reports``.

The same report as ``osteopano predict --report`` and ``osteopano measure --report``: with a model the
score and the measurement, without one (measurement mode) the cortical-width screen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osteopano.render import reports


def build_web_report(radiograph: Any, result: Any, card: dict[str, Any], *, heatmap_overlay: np.ndarray | None,
                     measurement: Any, cortex_overlay: np.ndarray | None) -> tuple[str, bytes]:
    """(HTML, PDF bytes) of the report (``osteopano.render.reports.build_report``); nothing is written to disk."""
    return reports.build_report(radiograph, result, card, heatmap_overlay, measurement, cortex_overlay)


def build_dicom_outputs(dicom_data: bytes, result: Any, cortex_overlay: np.ndarray | None) -> dict[str, bytes]:
    """For a DICOM upload with a measurement: the Structured Report (TID 1500, with the model's score when
    there is one) and the Secondary Capture of the overlay, both in the source's study, as file bytes
    (``{'sr': ..., 'sc': ...}``; ``osteopano.render.dicom_out``). Empty when there is nothing to report."""
    import io

    import pydicom

    from osteopano.render.dicom_out import build_sc, build_sr

    measurement = getattr(result, "measurement", None)
    if measurement is None or cortex_overlay is None:
        return {}
    source = pydicom.dcmread(io.BytesIO(dicom_data), stop_before_pixels=True, force=True)
    scored = getattr(result, "probability", None) is not None
    objects = {"sr": build_sr(source, measurement, model_score=result.probability if scored else None,
                              model_threshold=result.threshold if scored else None,
                              model_id=result.model_id if scored else None),
               "sc": build_sc(source, cortex_overlay)}
    files = {}
    for key, ds in objects.items():
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files[key] = buf.getvalue()
    return files
