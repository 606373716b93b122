"""Data sets: discovery, labels and patient-grouped splits."""
