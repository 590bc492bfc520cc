"""Fixtures of the location-encoder task tests: none of their own yet."""
