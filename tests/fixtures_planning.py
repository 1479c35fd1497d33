"""Fixtures of the planning tests (registered in tests/conftest.py)."""
