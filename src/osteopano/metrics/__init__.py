"""Screening metrics with confidence intervals, and their plots."""
