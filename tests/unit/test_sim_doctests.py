"""The examples in the simulators' and firmware's public docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "firmware_stubs.probe",
        "simulators.chaos",
        "simulators.wallclock",
        "simulators.demand",
        "simulators.staff",
        "simulators.invariants",
        "simulators.scenarios",
        "simulators.serial_probe",
        "simulators.process_faults",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    """Every >>> example of the module passes."""
    failed, _ = doctest.testmod(importlib.import_module(module))
    assert failed == 0
