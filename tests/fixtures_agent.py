"""Fixtures of the agent tests (registered in tests/conftest.py)."""
