"""Per-image screening reports: a self-contained HTML page and an A4 PDF.

``write_report`` writes ``<stem>.html`` and ``<stem>.pdf`` for one screened
radiograph. Both show the same content, built once by ``report_context``:

* the radiograph and (when given) the Grad-CAM overlay;
* the model score against the decision threshold (a bar with the threshold
  marked) and the decision: refer for DXA, or no referral;
* plain-language paragraphs for the dentist and for the patient
  (``plain_language``, also used by the web page);
* the mandibular cortical width (MCW) per side when a measurement is given;
* a model-card summary: training data (marked prominently when synthetic),
  test metrics with 95% CIs, threshold and how it was chosen, model id,
  versions, dates;
* the disclaimer.

The HTML embeds its images as base64 PNG data URIs and its CSS inline: it opens
offline and loads nothing from the network. The PDF is rendered from the same
HTML by WeasyPrint, so the two cannot drift. No patient name is ever shown: only the DICOM
PatientID when the image had one, and the image's file name (never its folder).

Torch-free: the ONNX path writes reports too. ``result`` is a
``screening.ScreeningResult`` or any object with its attributes; ``card`` the
engine's model-card dict, whose missing keys are simply left out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from osteopano import __version__
from osteopano.io.files import atomic_write_bytes, atomic_write_text
from osteopano.model.card import CardView
from osteopano.render.display import display_u8, png_data_uri
from osteopano.render.texts import (DISCLAIMER, MCW_THRESHOLD_MM, classical_decision_text, decision_text,
                                    format_probability, format_width, plain_language, risk_texts)

HTML_WIDTH = 1200   # images in the HTML are downscaled to this width (px)
TEMPLATE = "report.html"
CORTEX_CAPTION = "Cortical width measurement"
CORTEX_NOTE = ("Traced lower border of the mandible (cyan), endosteal margin (yellow) and the measured width "
               "at each site (red). Check the lines before relying on the widths.")


# ----------------------------------------------------------------------------- formatting


def _proportion(entry: Any) -> str | None:
    """A metrics.json proportion dict -> '85% (95% CI 70-93%; 34/40)'; None when absent or undefined."""
    if not isinstance(entry, dict) or entry.get("value") is None:
        return None
    text = f"{100 * entry['value']:.0f}%"
    ci, k, n = entry.get("ci"), entry.get("k"), entry.get("n")
    details = [f"95% CI {100 * ci[0]:.0f}\u2013{100 * ci[1]:.0f}%"] if ci else []
    if k is not None and n:
        details.append(f"{k}/{n}")
    return f"{text} ({'; '.join(details)})" if details else text


def _auc(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"{float(entry):.2f}" if isinstance(entry, (int, float)) else None
    if entry.get("value") is None:
        return entry.get("note")
    ci = entry.get("ci")
    return f"{entry['value']:.2f}" + (f" (95% CI {ci[0]:.2f}\u2013{ci[1]:.2f})" if ci else "")


def _when(value: Any) -> str | None:
    """An ISO timestamp as '2026-11-26 18:22 UTC' (other text unchanged)."""
    if value in (None, ""):
        return None
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if stamp.tzinfo is not None:
        return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return stamp.strftime("%Y-%m-%d %H:%M")


def report_stem(result: Any) -> str:
    """The output file stem: the image's file stem made file-name safe, 'report' when there is none."""
    path = getattr(result, "path", None)
    stem = Path(str(path)).stem if path else ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return stem or "report"


# ----------------------------------------------------------------------------- content


def _training_data(card: CardView) -> dict[str, Any]:
    provenance = {True: "synthetic", False: "real"}.get(card.synthetic, "unknown")
    if provenance == "synthetic":
        banner = ("Model trained on a SYNTHETIC PHANTOM: its training images were computer-generated, "
                  "not patients' radiographs. It is not clinically validated, and this result is not "
                  "clinical evidence.")
    elif provenance == "unknown":
        banner = ("The training data provenance of this model is unknown. Its clinical validity is not "
                  "established: check where the model comes from before relying on it.")
    else:
        banner = None
    summary = {"synthetic": "Synthetic phantom images (computer-generated)",
               "real": "Radiographs",
               "unknown": "Unknown provenance"}[provenance]
    if card.n_images:
        summary += f", {card.n_images} images"
    return {"provenance": provenance, "banner": banner, "summary": summary,
            "description": card.data_description or None}


def _threshold_rule(card: CardView) -> str | None:
    """How the model's threshold was chosen, in words (with the rule when the words do not name it)."""
    text, rule = card.threshold_description, card.threshold_rule
    if text and rule and str(rule) not in str(text):
        return f"{text} (rule: {rule})"
    return str(text or rule) if (text or rule) else None


def _metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                       ("accuracy", "Accuracy")):
        text = _proportion(metrics.get(key))
        if text:
            rows.append((label, text))
    auc = _auc(metrics.get("auc"))
    if auc:
        rows.append(("ROC AUC", auc))
    if metrics.get("n"):
        pos = metrics.get("n_positive")
        rows.append(("Test images", f"{metrics['n']}" + (f" ({pos} positive)" if pos is not None else "")))
    return rows


def _card_rows(card: CardView, result: Any, threshold: float | None) -> list[tuple[str, str]]:
    rule = _threshold_rule(card)
    own = card.threshold
    if own is not None and threshold is not None and abs(own - float(threshold)) > 1e-9:
        # the user replaced the model's threshold: the card's rule describes the model's own one
        rule = f"set for this screening; the model's own threshold is {format_probability(own)}" + (
            f" ({rule})" if rule else "")
    rows = [
        ("Model id", getattr(result, "model_id", None) or card.model_id),
        ("Backbone", card.backbone),
        ("Classes", ", ".join(card.classes) or None),
        ("Decision threshold", format_probability(threshold) + (f" \u2014 {rule}" if rule else "")
         if threshold is not None else rule),
        ("Evaluated on", card.metrics.get("evaluated_on")),
        ("Model trained", _when(card.trained)),
        ("Trained with osteopano", card.version),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def _mcw_context(m: Any) -> dict[str, Any] | None:
    if m is None:
        return None
    limit = float(getattr(m, "threshold_mm", MCW_THRESHOLD_MM) or MCW_THRESHOLD_MM)
    rows = []
    for label, part in (("Patient's right", getattr(m, "right", None)), ("Patient's left", getattr(m, "left", None)),
                        ("Mean", m)):
        width = getattr(part, "mcw_mm", None)
        below = width is not None and np.isfinite(width) and width < limit
        rows.append((label, format_width(width, getattr(part, "mcw_px", None)), below))
    quality = getattr(m, "quality", None)
    notes = []
    if quality == "low":
        notes.append("Low-confidence measurement: check it on the image.")
    elif quality == "failed":
        notes.append("The automatic measurement failed.")
    return {"rows": rows, "threshold": f"{limit:g} mm", "quality": quality, "notes": notes}


def report_context(radiograph: Any, result: Any, card: dict[str, Any] | None,
                   heatmap_overlay: np.ndarray | None = None, measurement: Any = None,
                   *, now: datetime | None = None, cortex_overlay: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the report shows, as display-ready values (shared by the HTML and the PDF).

    Keeps the display images as arrays under ``'grey'``, ``'overlay'`` (Grad-CAM) and ``'cortex'`` (the
    traced border and widths), RGB uint8 or None. Without a model score, a measurement is the screen: the
    decision and texts are the cortical width's (the classical index) and the model section is empty.
    """
    view = CardView.of(card)
    pixels = np.asarray(getattr(radiograph, "pixels", radiograph), dtype=np.float32)
    error = getattr(result, "error", None)
    prob = getattr(result, "probability", None)
    threshold = getattr(result, "threshold", None)
    if threshold is None:
        threshold = view.threshold
    decision = None if error or prob is None else bool(getattr(result, "decision", None))
    spacing = getattr(result, "pixel_spacing_mm", None) or getattr(radiograph, "pixel_spacing_mm", None)
    path = getattr(result, "path", None) or getattr(radiograph, "path", None)
    ctx = {
        "title": "Osteoporosis screening report",
        "generated": (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        "image_name": Path(str(path)).name if path else None,
        "patient_id": getattr(result, "patient_id", None) or None,
        "image_size": f"{pixels.shape[1]} \u00d7 {pixels.shape[0]} px",
        "pixel_spacing": f"{spacing:.3g} mm/px" if spacing else None,
        "error": error,
        "decision": decision,
        "decision_text": decision_text(decision),
        "probability": format_probability(prob),
        "threshold": format_probability(threshold),
        "probability_pct": None if prob is None else round(100 * float(np.clip(prob, 0, 1)), 2),
        "threshold_pct": None if threshold is None else round(100 * float(np.clip(threshold, 0, 1)), 2),
        "texts": plain_language(result, measurement),
        "training": _training_data(view),
        "metrics": _metrics_rows(view.metrics),
        "card_rows": _card_rows(view, result, threshold),
        "intended_use": view.intended_use,
        "mcw": _mcw_context(measurement),
        "risk": risk_texts(getattr(result, "risk", None)),
        "version": __version__,
        "disclaimer": DISCLAIMER,
        "grey": display_u8(pixels),
        "overlay": None if heatmap_overlay is None else np.ascontiguousarray(heatmap_overlay, dtype=np.uint8),
        "heatmap_note": _heatmap_note(getattr(result, "heatmap", None)),
        "cortex": None if cortex_overlay is None else np.ascontiguousarray(cortex_overlay, dtype=np.uint8),
    }
    if prob is None and measurement is not None and not error:
        ctx.update(decision=measurement.decision, decision_text=classical_decision_text(measurement),
                   error="Screened by the mandibular cortical width only: no model was used, so there is no "
                         "model score.",
                   training={"banner": None, "summary": "No model: the classical cortical width measurement only.",
                             "description": None, "provenance": "none"},
                   metrics=[], card_rows=[], intended_use=None)
    return ctx


def _heatmap_note(heatmap: np.ndarray | None) -> str:
    if heatmap is not None and not np.any(np.asarray(heatmap) > 0):
        return ("No area of the image raised the score for the positive class, so the heatmap is empty. "
                "This is not a map of disease.")
    return "Warm colours mark the areas that raised the score most. This is not a map of disease."


# ----------------------------------------------------------------------------- HTML


def render_html(radiograph: Any, result: Any, card: dict[str, Any] | None,
                heatmap_overlay: np.ndarray | None = None, measurement: Any = None) -> str:
    """The self-contained HTML report (inline CSS, images as data URIs) as a string.

    ``heatmap_overlay``: ``explain.overlay`` output (uint8 RGB, H x W x 3) or None.
    """
    return _render_html(report_context(radiograph, result, card, heatmap_overlay, measurement))


def _render_html(ctx: dict[str, Any]) -> str:
    images = [("Radiograph", png_data_uri(ctx["grey"], HTML_WIDTH), "The radiograph as screened.")]
    if ctx["overlay"] is not None:
        images.append(("Where the model looked (Grad-CAM)", png_data_uri(ctx["overlay"], HTML_WIDTH), ctx["heatmap_note"]))
    if ctx["cortex"] is not None:
        images.append((CORTEX_CAPTION, png_data_uri(ctx["cortex"], HTML_WIDTH), CORTEX_NOTE))
    return _environment().get_template(TEMPLATE).render(**ctx, images=images)


def _environment():
    from osteopano.render.templating import environment

    return environment()


# ----------------------------------------------------------------------------- PDF


def html_to_pdf(html: str) -> bytes:
    """The PDF of an HTML report, rendered by WeasyPrint from the very same HTML (in memory)."""
    from osteopano.errors import OsteopanoError

    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: WeasyPrint's system libraries (Pango) are missing
        raise OsteopanoError(f"PDF reports need WeasyPrint and its Pango library ({exc}); "
                             "pip install weasyprint") from None
    return weasyprint.HTML(string=html).write_pdf()


# ----------------------------------------------------------------------------- both


def build_report(radiograph: Any, result: Any, card: dict[str, Any] | None,
                 heatmap_overlay: np.ndarray | None = None, measurement: Any = None,
                 cortex_overlay: np.ndarray | None = None) -> tuple[str, bytes]:
    """The report as (HTML text, PDF bytes), in memory; the PDF is rendered from the same HTML.
    ``cortex_overlay``: the traced border and widths drawn on the radiograph (RGB), shown when given."""
    html = _render_html(report_context(radiograph, result, card, heatmap_overlay, measurement,
                                       cortex_overlay=cortex_overlay))
    return html, html_to_pdf(html)


def write_report(out_dir: str | Path, radiograph: Any, result: Any, card: dict[str, Any] | None,
                 heatmap_overlay: np.ndarray | None = None, measurement: Any = None,
                 stem: str | None = None, cortex_overlay: np.ndarray | None = None) -> dict[str, Path]:
    """Write ``<stem>.html`` and ``<stem>.pdf`` into ``out_dir``, atomically; returns
    ``{'html': path, 'pdf': path}``. ``stem`` defaults to the image's file stem; batch callers pass a
    unique name (``osteopano.io.walk.OutputNames``)."""
    out_dir = Path(out_dir)
    stem = stem or report_stem(result)
    paths = {"html": out_dir / f"{stem}.html", "pdf": out_dir / f"{stem}.pdf"}
    html, pdf = build_report(radiograph, result, card, heatmap_overlay, measurement, cortex_overlay)
    atomic_write_text(paths["html"], html)
    atomic_write_bytes(paths["pdf"], pdf)
    return paths
