"""Fixtures of the sim tests (registered in tests/conftest.py)."""
