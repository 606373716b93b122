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
offline and loads nothing from the network. The PDF is drawn with matplotlib
(no extra dependency). No patient name is ever shown: only the DICOM
PatientID when the image had one, and the image's file name (never its folder).

Torch-free: the ONNX path writes reports too. ``result`` is a
``screening.ScreeningResult`` or any object with its attributes; ``card`` the
engine's model-card dict, whose missing keys are simply left out.
"""

from __future__ import annotations

import base64
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from osteopano import __version__
from osteopano.io.files import atomic_path, atomic_write_text

DISCLAIMER = ("This report is a screening aid, not a diagnosis; only a DXA scan can diagnose osteoporosis. "
              "Interpret it together with the patient's history and clinical risk factors.")
REFER = "Refer for DXA bone-density assessment"
NO_REFER = "No referral suggested by this screen"
NOT_SCREENED = "Not screened: the image could not be analysed"
MCW_THRESHOLD_MM = 3.0
HTML_WIDTH = 1200   # images in the HTML are downscaled to this width (px)
PDF_WIDTH = 1000    # ... and in the PDF
A4_INCHES = (8.27, 11.69)
TEMPLATE = "report.html"


# ----------------------------------------------------------------------------- formatting


def format_probability(p: float | None) -> str:
    """How a model score or threshold is printed everywhere in the report: 3 decimals ('0.734')."""
    return "n/a" if p is None else f"{float(p):.3f}"


def _mm(v: float | None) -> str:
    return "not measured" if v is None or not np.isfinite(v) else f"{float(v):.2f} mm"


def _width(mm: float | None, px: float | None) -> str:
    """A cortical width in mm, else in pixels when the pixel spacing is unknown."""
    if (mm is None or not np.isfinite(mm)) and px is not None and np.isfinite(px):
        return f"{float(px):.1f} px (pixel spacing unknown)"
    return _mm(mm)


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


def _first(mapping: dict[str, Any], *keys: str) -> Any:
    """The first present, non-empty value among ``keys``."""
    for key in keys:
        value = mapping.get(key)
        if value not in (None, "", {}, []):
            return value
    return None


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


# ----------------------------------------------------------------------------- texts


def plain_language(result: Any, measurement: Any = None) -> dict[str, str]:
    """The two plain-language paragraphs: ``'dentist'`` (clinical, with the score and threshold, and
    the cortical width when measured) and ``'patient'`` (simple words, not alarming, what DXA is)."""
    error = getattr(result, "error", None)
    if error or getattr(result, "probability", None) is None:
        return {
            "dentist": (f"This image could not be screened ({error or 'no model score'}). "
                        "Check the file and screen it again; meanwhile refer on clinical grounds as usual."),
            "patient": ("The computer program could not check your dental X-ray this time. "
                        "This says nothing about your bones; your dentist will tell you what happens next."),
        }
    p, t = format_probability(result.probability), format_probability(result.threshold)
    if result.decision:
        dentist = (f"The model's score for this radiograph is {p}, at or above the decision threshold of {t}. "
                   "Suggested action: refer for DXA bone-density assessment, weighed together with the usual "
                   "clinical risk factors (age, sex, previous low-trauma fractures, family history, "
                   "glucocorticoid use).")
        patient = ("Your dental X-ray was checked by a computer program that looks for signs that bones may be "
                   "less dense than usual. It noticed some of these signs, so your dentist may suggest a DXA "
                   "scan. A DXA scan is a quick, painless scan, usually of the hip and lower back, that "
                   "measures bone density with a very small dose of X-rays. This check is not a diagnosis: "
                   "only a DXA scan can tell whether you have osteoporosis, and many people who have one are "
                   "told their bones are fine.")
    else:
        dentist = (f"The model's score for this radiograph is {p}, below the decision threshold of {t}: "
                   f"{NO_REFER.lower()}. A negative screen does not rule osteoporosis out; refer on clinical "
                   "grounds when risk factors are present.")
        patient = ("Your dental X-ray was checked by a computer program that looks for signs that bones may be "
                   "less dense than usual. It did not find signs that call for a further test. This check is "
                   "not a diagnosis and cannot rule osteoporosis out. If you are worried about your bones, "
                   "or have broken a bone in a minor fall, talk to your doctor: they can arrange a DXA scan, "
                   "a quick and painless bone-density scan.")
    if getattr(result, "heatmap", None) is not None:
        dentist += " The heatmap shows which parts of the image raised the score most; it is not a map of disease."
    mcw = _mcw_sentence(measurement, bool(result.decision))
    if mcw:
        dentist += " " + mcw
    return {"dentist": dentist, "patient": patient}


def _mcw_sentence(m: Any, refer: bool) -> str:
    """The dentist's sentence about the cortical width measurement ('' when none was made)."""
    if m is None:
        return ""
    if getattr(m, "quality", None) == "failed":
        return "The mandibular cortical width could not be measured automatically."
    if getattr(m, "mcw_mm", None) is None:
        return ("The mandibular cortical width cannot be given in millimetres: the image's pixel spacing is "
                "unknown.")
    limit = float(getattr(m, "threshold_mm", MCW_THRESHOLD_MM) or MCW_THRESHOLD_MM)
    sides = ", ".join(f"{_mm(getattr(getattr(m, side, None), 'mcw_mm', None))} on the patient's {side}"
                      for side in ("right", "left"))
    text = (f"The mandibular cortical width below the mental foramen measures {sides} (mean {_mm(m.mcw_mm)}); "
            f"a width under the classical {limit:g} mm threshold is a recognised radiographic sign of low "
            "bone mineral density.")
    if m.mcw_mm < limit and not refer:
        text += " The thin cortex is a reason to consider DXA referral despite the model's negative score."
    if getattr(m, "quality", None) == "low":
        text += " The automatic measurement has low confidence: check it on the image."
    return text


# ----------------------------------------------------------------------------- content


def _display_u8(pixels: np.ndarray) -> np.ndarray:
    """Grey [0, 1] pixels -> uint8, windowed to the 0.5-99.5 percentiles (what a viewer shows)."""
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    scale = 255.0 / (hi - lo) if hi > lo else 255.0
    return np.clip((pixels - lo) * scale, 0, 255).round().astype(np.uint8)


def _shrink(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _png_data_uri(image: np.ndarray) -> str:
    """uint8 grey or RGB image -> 'data:image/png;base64,...' (downscaled to HTML_WIDTH)."""
    image = _shrink(image, HTML_WIDTH)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _training_data(card: dict[str, Any]) -> dict[str, Any]:
    data = card.get("training_data") if isinstance(card.get("training_data"), dict) else {}
    synthetic = data.get("synthetic")
    provenance = {True: "synthetic", False: "real"}.get(synthetic, "unknown")
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
    n_images = data.get("n_images")
    if n_images:
        summary += f", {n_images} images"
    return {"provenance": provenance, "banner": banner, "summary": summary,
            "description": data.get("description") or None}


def _threshold_rule(card: dict[str, Any], metrics: dict[str, Any]) -> str | None:
    """How the threshold was chosen, from whichever of the card's layouts is present."""
    threshold = card.get("threshold")
    rule_sources = [threshold if isinstance(threshold, dict) else {}, metrics.get("threshold_rule") or {}]
    for source in rule_sources:
        if isinstance(source, dict):
            text = _first(source, "how_chosen", "description")
            rule = source.get("rule")
            if text and rule and str(rule) not in str(text):
                return f"{text} (rule: {rule})"
            if text or rule:
                return str(text or rule)
    rule = card.get("threshold_rule")
    return str(rule) if rule not in (None, "") else None


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


def _card_threshold(card: dict[str, Any]) -> float | None:
    value = card.get("threshold")
    value = value.get("value") if isinstance(value, dict) else value
    return float(value) if isinstance(value, (int, float)) else None


def _card_rows(card: dict[str, Any], result: Any, threshold: float | None) -> list[tuple[str, str]]:
    metrics = card.get("test_metrics") if isinstance(card.get("test_metrics"), dict) else {}
    rule = _threshold_rule(card, metrics)
    own = _card_threshold(card)
    if own is not None and threshold is not None and abs(own - float(threshold)) > 1e-9:
        # the user replaced the model's threshold: the card's rule describes the model's own one
        rule = f"set for this screening; the model's own threshold is {format_probability(own)}" + (
            f" ({rule})" if rule else "")
    rows = [
        ("Model id", _first({"r": getattr(result, "model_id", None), "c": card.get("model_id")}, "r", "c")),
        ("Backbone", card.get("backbone")),
        ("Classes", ", ".join(map(str, card["classes"])) if card.get("classes") else None),
        ("Decision threshold", format_probability(threshold) + (f" \u2014 {rule}" if rule else "")
         if threshold is not None else rule),
        ("Evaluated on", metrics.get("evaluated_on")),
        ("Model trained", _when(_first(card, "trained", "created"))),
        ("Trained with osteopano", _first(card, "osteopano_version", "version")),
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
        rows.append((label, _width(width, getattr(part, "mcw_px", None)), below))
    quality = getattr(m, "quality", None)
    notes = []
    if quality == "low":
        notes.append("Low-confidence measurement: check it on the image.")
    elif quality == "failed":
        notes.append("The automatic measurement failed.")
    if getattr(m, "klemetti_estimate", None):
        notes.append(f"Estimated Klemetti index: {m.klemetti_estimate}.")
    return {"rows": rows, "threshold": f"{limit:g} mm", "quality": quality, "notes": notes}


def report_context(radiograph: Any, result: Any, card: dict[str, Any] | None,
                   heatmap_overlay: np.ndarray | None = None, measurement: Any = None,
                   *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the report shows, as display-ready values (shared by the HTML and the PDF).

    Keeps the display images as arrays under ``'grey'`` and ``'overlay'`` (RGB uint8 or None).
    """
    card = card if isinstance(card, dict) else {}
    pixels = np.asarray(getattr(radiograph, "pixels", radiograph), dtype=np.float32)
    error = getattr(result, "error", None)
    prob = getattr(result, "probability", None)
    threshold = getattr(result, "threshold", None)
    if threshold is None:
        threshold = _card_threshold(card)
    decision = None if error or prob is None else bool(getattr(result, "decision", None))
    spacing = getattr(result, "pixel_spacing_mm", None) or getattr(radiograph, "pixel_spacing_mm", None)
    path = getattr(result, "path", None) or getattr(radiograph, "path", None)
    metrics = card.get("test_metrics") if isinstance(card.get("test_metrics"), dict) else {}
    return {
        "title": "Osteoporosis screening report",
        "generated": (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        "image_name": Path(str(path)).name if path else None,
        "patient_id": getattr(result, "patient_id", None) or None,
        "image_size": f"{pixels.shape[1]} \u00d7 {pixels.shape[0]} px",
        "pixel_spacing": f"{spacing:.3g} mm/px" if spacing else None,
        "error": error,
        "decision": decision,
        "decision_text": NOT_SCREENED if decision is None else (REFER if decision else NO_REFER),
        "probability": format_probability(prob),
        "threshold": format_probability(threshold),
        "probability_pct": None if prob is None else round(100 * float(np.clip(prob, 0, 1)), 2),
        "threshold_pct": None if threshold is None else round(100 * float(np.clip(threshold, 0, 1)), 2),
        "texts": plain_language(result, measurement),
        "training": _training_data(card),
        "metrics": _metrics_rows(metrics),
        "card_rows": _card_rows(card, result, threshold),
        "intended_use": card.get("intended_use"),
        "mcw": _mcw_context(measurement),
        "version": __version__,
        "disclaimer": DISCLAIMER,
        "grey": _display_u8(pixels),
        "overlay": None if heatmap_overlay is None else np.ascontiguousarray(heatmap_overlay, dtype=np.uint8),
        "heatmap_note": _heatmap_note(getattr(result, "heatmap", None)),
    }


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
    images = [("Radiograph", _png_data_uri(ctx["grey"]), "The radiograph as screened.")]
    if ctx["overlay"] is not None:
        images.append(("Where the model looked (Grad-CAM)", _png_data_uri(ctx["overlay"]), ctx["heatmap_note"]))
    return _environment().get_template(TEMPLATE).render(**ctx, images=images)


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


# ----------------------------------------------------------------------------- PDF

INK, MUTED, ACCENT = "#1f2d3d", "#5b6b7b", "#2a6f7f"
REFER_COLOUR, CLEAR_COLOUR, NEUTRAL_COLOUR = "#b35c00", "#2e7d4f", "#5b6b7b"
WARN_BG, WARN_EDGE = "#fff4d6", "#d9a400"


class _PdfFlow:
    """Lays blocks out top to bottom on A4 pages (figure fractions), starting a new page when full."""

    MARGIN_X, TOP, BOTTOM = 0.07, 0.955, 0.075

    def __init__(self, pdf: Any, footer: str):
        self.pdf, self.footer, self.fig, self.y, self.page = pdf, footer, None, 0.0, 0
        self._new_page()

    def _new_page(self) -> None:
        from matplotlib.figure import Figure

        if self.fig is not None:
            self._finish_page()
        self.fig = Figure(figsize=A4_INCHES)
        self.y = self.TOP
        self.page += 1

    def _finish_page(self) -> None:
        self.fig.text(0.5, 0.035, "\n".join(textwrap.wrap(self.footer, 110)), ha="center", va="center",
                      fontsize=7.5, color=MUTED, style="italic")
        self.fig.text(1 - self.MARGIN_X, 0.015, f"page {self.page}", ha="right", fontsize=7, color=MUTED)
        self.pdf.savefig(self.fig)

    def _room(self, height: float) -> None:
        if self.y - height < self.BOTTOM:
            self._new_page()

    def text(self, text: str, size: float = 9.0, colour: str = INK, weight: str = "normal",
             gap: float = 0.006, box: tuple[str, str] | None = None) -> None:
        width = int((96 if box else 108) * 9.0 / size)  # characters per line at this font size
        lines = textwrap.wrap(text, width) or [""]
        height = len(lines) * size * 1.45 / 72 / A4_INCHES[1]
        self._room(height + gap)
        bbox = dict(boxstyle="round,pad=0.6", facecolor=box[0], edgecolor=box[1]) if box else None
        self.fig.text(self.MARGIN_X + (0.012 if box else 0), self.y - (0.006 if box else 0), "\n".join(lines),
                      fontsize=size, color=colour, weight=weight, va="top", ha="left", linespacing=1.35,
                      bbox=bbox)
        self.y -= height + gap + (0.02 if box else 0)

    def heading(self, text: str) -> None:
        self._room(0.06)
        self.y -= 0.008
        self.text(text, size=11, colour=ACCENT, weight="bold", gap=0.004)

    def table(self, rows: list[tuple[str, str]], size: float = 8.5) -> None:
        # linespacing 'normal' = the font's own metrics, so label and value tops line up whatever the glyphs
        for label, value in rows:
            lines = textwrap.wrap(value, 80) or [""]
            height = (len(lines) * 1.2 + 0.3) * size / 72 / A4_INCHES[1]
            self._room(height)
            self.fig.text(self.MARGIN_X, self.y, label, fontsize=size, color=MUTED, va="top", linespacing="normal")
            self.fig.text(self.MARGIN_X + 0.24, self.y, "\n".join(lines), fontsize=size, color=INK, va="top",
                          linespacing="normal")
            self.y -= height
        self.y -= 0.006

    def score_bar(self, prob: float, threshold: float | None, colour: str, label: str) -> None:
        height = 0.022
        self._room(height + 0.06)
        self.y -= 0.012  # room for the threshold label above the bar
        ax = self.fig.add_axes((self.MARGIN_X, self.y - height, 1 - 2 * self.MARGIN_X, height))
        ax.barh([0], [1.0], color="#e6ebef", height=1.0)
        ax.barh([0], [prob], color=colour, height=1.0)
        if threshold is not None:
            ax.axvline(threshold, color=INK, linewidth=2)
            ax.text(threshold, 1.35, f"threshold {format_probability(threshold)}", ha="center", va="bottom",
                    fontsize=8, color=INK, transform=ax.get_xaxis_transform())
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.5, 0.5)
        ax.set_yticks([])
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.tick_params(axis="x", labelsize=7, colors=MUTED, length=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
        self.y -= height + 0.03
        self.text(label, size=9, colour=INK)

    def images(self, items: list[tuple[str, np.ndarray]]) -> None:
        gap = 0.02
        width = (1 - 2 * self.MARGIN_X - gap * (len(items) - 1)) / len(items)
        aspect = max(im.shape[0] / im.shape[1] for _, im in items) * A4_INCHES[0] / A4_INCHES[1]
        height = width * aspect
        self._room(height + 0.03)
        for i, (title, image) in enumerate(items):
            ax = self.fig.add_axes((self.MARGIN_X + i * (width + gap), self.y - 0.018 - height, width, height))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="antialiased")
            ax.set_axis_off()
            ax.set_title(title, fontsize=8.5, color=MUTED, loc="left")
        self.y -= height + 0.03

    def close(self) -> None:
        self._finish_page()


def _write_pdf(path: Path, ctx: dict[str, Any]) -> None:
    from matplotlib.backends.backend_pdf import PdfPages

    colour = {True: REFER_COLOUR, False: CLEAR_COLOUR}.get(ctx["decision"], NEUTRAL_COLOUR)
    with atomic_path(path) as tmp, PdfPages(tmp, metadata={"Title": ctx["title"],
                                                           "Creator": f"osteopano {ctx['version']}"}) as pdf:
        flow = _PdfFlow(pdf, ctx["disclaimer"])
        flow.text(ctx["title"], size=17, colour=INK, weight="bold", gap=0.004)
        meta = [f"Generated {ctx['generated']}"]
        meta += [f"Image {ctx['image_name']}"] if ctx["image_name"] else []
        meta += [f"Patient ID {ctx['patient_id']}"] if ctx["patient_id"] else []
        meta += [ctx["image_size"]] + ([ctx["pixel_spacing"]] if ctx["pixel_spacing"] else [])
        flow.text("  \u00b7  ".join(meta), size=8, colour=MUTED, gap=0.014)
        if ctx["training"]["banner"]:
            flow.text(ctx["training"]["banner"], size=9, weight="bold", box=(WARN_BG, WARN_EDGE))
        flow.text(ctx["decision_text"], size=15, colour=colour, weight="bold", gap=0.012)
        if ctx["error"]:
            flow.text(ctx["error"], size=9, colour=INK)
        else:
            prob = float(ctx["probability_pct"]) / 100
            thr = None if ctx["threshold_pct"] is None else float(ctx["threshold_pct"]) / 100
            flow.score_bar(prob, thr, colour, f"Model score {ctx['probability']} "
                                              f"(decision threshold {ctx['threshold']}; refer when score "
                                              "\u2265 threshold)")
        images = [("Radiograph", _shrink(ctx["grey"], PDF_WIDTH))]
        if ctx["overlay"] is not None:
            images.append(("Where the model looked (Grad-CAM)", _shrink(ctx["overlay"], PDF_WIDTH)))
        flow.images(images)
        if ctx["overlay"] is not None:
            flow.text(ctx["heatmap_note"], size=8, colour=MUTED)
        flow.heading("For the dentist")
        flow.text(ctx["texts"]["dentist"])
        flow.heading("For the patient")
        flow.text(ctx["texts"]["patient"])
        if ctx["mcw"]:
            mcw = ctx["mcw"]
            flow.heading(f"Mandibular cortical width (classical threshold {mcw['threshold']})")
            flow.table([(label, value + ("  (below threshold)" if below else "")) for label, value, below
                        in mcw["rows"]])
            for note in mcw["notes"]:
                flow.text(note, size=8.5, colour=MUTED)
        flow.heading("About the model")
        flow.table([("Training data", ctx["training"]["summary"])]
                   + ([("Data details", ctx["training"]["description"])] if ctx["training"]["description"]
                      else [])
                   + ctx["metrics"] + ctx["card_rows"]
                   + [("Report made with", f"osteopano {ctx['version']}, {ctx['generated']}")])
        flow.close()


# ----------------------------------------------------------------------------- both


def write_report(out_dir: str | Path, radiograph: Any, result: Any, card: dict[str, Any] | None,
                 heatmap_overlay: np.ndarray | None = None, measurement: Any = None,
                 stem: str | None = None) -> dict[str, Path]:
    """Write ``<stem>.html`` and ``<stem>.pdf`` into ``out_dir``, atomically; returns
    ``{'html': path, 'pdf': path}``. ``stem`` defaults to the image's file stem; batch callers pass a
    name unique within the batch (``a/x.png`` and ``b/x.png`` must not overwrite each other)."""
    out_dir = Path(out_dir)
    stem = stem or report_stem(result)
    paths = {"html": out_dir / f"{stem}.html", "pdf": out_dir / f"{stem}.pdf"}
    ctx = report_context(radiograph, result, card, heatmap_overlay, measurement)
    atomic_write_text(paths["html"], _render_html(ctx))
    _write_pdf(paths["pdf"], ctx)
    return paths
