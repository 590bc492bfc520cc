"""Fixtures of the study-area tests: none of their own yet (tests/conftest.py has the session-wide ones)."""
