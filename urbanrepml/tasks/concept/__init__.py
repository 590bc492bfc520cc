"""Concept-aware geolocation: three stages on the one training loop, each freezing what the previous trained.

- :mod:`.hierarchy`: the two-level concept hierarchy (meta under exactly one parent), index maps.
- :mod:`.geocells`: semantic geocells (per-country K-Means on the unit sphere).
- :mod:`.data`: the concept dataset (index + hierarchy + geocells + cached stem features).
- :mod:`.stage0`, :mod:`.stage1`, :mod:`.stage2`: the three tasks; :mod:`.metrics`: their metrics.
"""
