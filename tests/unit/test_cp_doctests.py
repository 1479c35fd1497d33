"""The examples in the control plane's docstrings are true (every module of the package)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import control_plane

MODULES = sorted(m.name for m in pkgutil.walk_packages(control_plane.__path__, "control_plane."))


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    failed, _ = doctest.testmod(importlib.import_module(module))
    assert failed == 0
