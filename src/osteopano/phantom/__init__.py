"""The synthetic panoramic phantom with known ground truth (SYNTHETIC, not clinical data)."""
