"""Fixtures of the tuning tests: none of their own yet (tests/conftest.py has the session-wide ones, PostgreSQL included)."""
