"""Fixtures of the source-reader tests (the image index builders make their own tiny files)."""
