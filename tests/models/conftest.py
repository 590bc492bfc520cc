"""Fixtures of the model tests: none of their own yet (tests/conftest.py has the session-wide ones)."""
