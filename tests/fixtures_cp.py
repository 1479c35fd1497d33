"""Fixtures of the cp tests (registered in tests/conftest.py)."""
