"""Fixtures of the concept-geolocation task tests: none of their own yet."""
