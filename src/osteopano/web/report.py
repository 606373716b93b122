"""The downloadable report of a web screening (HTML and PDF, in memory), from ``osteopano.render.reports``.

With a model this is the usual report plus the cortex overlay. Without one (measurement mode) the
report's decision, texts and model section are those of the cortical-width screen: the shared report
would otherwise say 'not screened' for a result that has no model score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osteopano.render import reports
from osteopano.render.display import png_data_uri
from osteopano.render.templating import environment
from osteopano.web.measurement import classical_decision_text, measurement_texts

CORTEX_CAPTION = "Cortical width measurement"
CORTEX_NOTE = ("Traced lower border of the mandible (cyan), endosteal margin (yellow) and the measured width "
               "at each site (red). Check the lines before relying on the widths.")


def build_web_report(radiograph: Any, result: Any, card: dict[str, Any], *, heatmap_overlay: np.ndarray | None,
                     measurement: Any, cortex_overlay: np.ndarray | None) -> tuple[str, bytes]:
    """(HTML, PDF bytes) of the report; nothing is written to disk."""
    ctx = reports.report_context(radiograph, result, card, heatmap_overlay, measurement)
    if getattr(result, "probability", None) is None and measurement is not None:
        ctx.update(
            decision=measurement.decision,
            decision_text=classical_decision_text(measurement),
            error="Screened by the mandibular cortical width only: no model was used, so there is no model score.",
            texts=measurement_texts(measurement),
            training={"banner": None, "summary": "No model: the classical cortical width measurement only.",
                      "description": None},
            metrics=[], card_rows=[], intended_use=None,
        )
    images = [("Radiograph", png_data_uri(ctx["grey"], reports.HTML_WIDTH), "The radiograph as screened.")]
    if ctx["overlay"] is not None:
        images.append(("Where the model looked (Grad-CAM)", png_data_uri(ctx["overlay"], reports.HTML_WIDTH),
                       ctx["heatmap_note"]))
    if cortex_overlay is not None:
        images.append((CORTEX_CAPTION, png_data_uri(cortex_overlay, reports.HTML_WIDTH), CORTEX_NOTE))
    html = environment().get_template(reports.TEMPLATE).render(**ctx, images=images)
    return html, reports.html_to_pdf(html)


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
