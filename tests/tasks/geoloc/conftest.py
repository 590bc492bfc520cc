"""Fixtures of the geolocation task tests: none of their own yet."""
