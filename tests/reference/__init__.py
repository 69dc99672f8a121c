"""Slow, obviously-correct NumPy/SciPy references that the device code is tested against."""
