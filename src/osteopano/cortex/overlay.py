"""Overlay of a cortex measurement on its radiograph (``draw_overlay``)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def draw_overlay(image: Any, measurement: Any) -> np.ndarray:
    """The radiograph in colour (BGR uint8) with the traced border (cyan), the endosteal margin
    (yellow), the sites with their widths (red) and a headline; a failed side shows its reason."""
    grey = (np.clip(image.pixels, 0, 1) * 255).astype(np.uint8)
    vis = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    h, w = grey.shape
    lw = max(1, round(min(h, w) / 400))
    font = max(0.4, min(h, w) / 700)
    for s in measurement.sides():
        colour = (255, 255, 0) if s.located else (128, 128, 128)
        if len(s.border) > 1:
            cv2.polylines(vis, [np.round(s.border).astype(np.int32)], False, colour, lw, cv2.LINE_AA)
        if s.located and len(s.endosteal) > 1:
            cv2.polylines(vis, _runs(s.endosteal), False, (0, 220, 255), lw, cv2.LINE_AA)
        if s.located and s.site_xy and s.normal and s.mcw_px:
            p0 = np.array(s.site_xy)
            p1 = p0 + np.array(s.normal) * s.mcw_px
            cv2.line(vis, _pt(p0), _pt(p1), (0, 0, 255), lw + 1, cv2.LINE_AA)
            cv2.circle(vis, _pt(p0), 3 * lw, (0, 0, 255), -1, cv2.LINE_AA)
            text = f"{s.side[0].upper()}: " + (f"{s.mcw_mm:.1f} mm" if s.mcw_mm is not None else f"{s.mcw_px:.0f} px")
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, lw)
            org = p1 + np.array(s.normal) * 1.5 * th + np.array([-tw / 2, th / 2])
            _text(vis, text, org, font, lw)
    head = headline(measurement)
    _text(vis, head, np.array([10.0 * lw, 30.0 * font + 5]), font, lw,
          colour=(0, 0, 255) if measurement.quality != "ok" else (0, 255, 0))
    return vis


def headline(m: Any) -> str:
    """One line: width, quality, decision; the reasons when it failed."""
    if m.quality == "failed":
        return "FAILED: " + "; ".join(m.notes)
    width = f"MCW {m.mcw_mm:.2f} mm" if m.mcw_mm is not None else f"MCW {m.mcw_px:.1f} px (spacing unknown)"
    text = f"{width}  conf {np.floor(m.confidence * 100) / 100:.2f}"
    if m.decision is not None:
        text += f"  {'< ' if m.decision else '>= '}{m.threshold_mm:g} mm"
    if m.quality == "low":
        text = "LOW QUALITY - check by eye. " + text + ("  (" + "; ".join(m.notes) + ")" if m.notes else "")
    return text


def _runs(points: np.ndarray) -> list[np.ndarray]:
    """Split a polyline where points are missing (a gap of more than 3 steps), for drawing."""
    step = np.hypot(*np.diff(points, axis=0).T)
    cuts = np.nonzero(step > 3 * np.median(step))[0] + 1
    return [np.round(run).astype(np.int32) for run in np.split(points, cuts) if len(run) > 1]


def _pt(p: np.ndarray) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))


def _text(img: np.ndarray, text: str, org: np.ndarray, scale: float, lw: int,
          colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    """Text with a dark outline so it reads on any background."""
    h, w = img.shape[:2]
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, lw)
    x = int(np.clip(org[0], 2, max(2, w - tw - 2)))
    y = int(np.clip(org[1], th + 2, h - 4))
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), lw + 2, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, lw, cv2.LINE_AA)
