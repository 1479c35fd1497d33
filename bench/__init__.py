"""Benchmarks with a baseline measured in the same run (SPEC "Benchmarks").

``python -m bench NAME --json FILE`` runs one; ``python -m bench all --json FILE`` runs them all.
"""
