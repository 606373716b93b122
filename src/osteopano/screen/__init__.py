"""Screening: engines, the screener, Grad-CAM, results."""
