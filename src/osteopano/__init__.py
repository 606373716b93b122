"""osteopano: screen dental panoramic radiographs for signs of osteoporosis.

A research and screening aid, not a diagnosis.
"""

__version__ = "0.1.0"
