"""Classical mandibular cortical width measurement (no trained model needed)."""
