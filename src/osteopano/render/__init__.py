"""Presentation: display window, texts, HTML/PDF reports."""
