"""Run a program with its wall clock off by a fixed number of seconds (a box whose NTP is broken).

Only the wall clock moves: ``time.time``/``time.time_ns`` are shifted by ``--skew-s`` inside the
child Python process, while ``time.monotonic`` (what deadlines are measured on) is untouched, as
on a real box whose clock was set wrong. It works for any of the project's console scripts
without an option in the program itself::

    python -m simulators.wallclock --skew-s 3600 -- brigade-agent run --config agent.json

:func:`skewed_argv` builds that command line; :class:`SkewedClock` is the in-process equivalent
for code that takes a clock object (``monotonic()`` and ``wall()``).
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
import time
from collections.abc import Callable, Sequence


class SkewedClock:
    """A clock whose wall time is ``skew_s`` seconds off and whose monotonic time is true.

    >>> clock = SkewedClock(3600.0, wall=lambda: 1000.0, monotonic=lambda: 5.0)
    >>> clock.wall(), clock.monotonic()
    (4600.0, 5.0)
    """

    def __init__(
        self,
        skew_s: float,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.skew_s = skew_s
        self._wall = wall
        self._monotonic = monotonic

    def wall(self) -> float:
        return self._wall() + self.skew_s

    def monotonic(self) -> float:
        return self._monotonic()


def skewed_argv(argv: Sequence[str], skew_s: float) -> list[str]:
    """``argv`` (a console script or a Python file and its arguments) run with a skewed wall
    clock.

    >>> skewed_argv(["brigade-agent", "run"], -90)[1:5]
    ['-m', 'simulators.wallclock', '--skew-s', '-90']
    """
    return [sys.executable, "-m", "simulators.wallclock", "--skew-s", f"{skew_s:g}", "--", *argv]


def install_skew(skew_s: float) -> None:
    """Shift this process's ``time.time`` and ``time.time_ns`` by ``skew_s`` seconds."""
    real_time, real_time_ns = time.time, time.time_ns
    skew_ns = int(skew_s * 1e9)
    time.time = lambda: real_time() + skew_s
    time.time_ns = lambda: real_time_ns() + skew_ns


def _script_path(program: str) -> str:
    """The Python file behind a console script name (or the path given)."""
    if os.path.sep in program:
        return program
    beside = os.path.join(os.path.dirname(sys.executable), program)
    if os.path.exists(beside):
        return beside
    found = shutil.which(program)
    if found is None:
        raise SystemExit(f"wallclock: {program!r} not found")
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simulators.wallclock --skew-s S -- PROGRAM [ARGS...]``."""
    parser = argparse.ArgumentParser(prog="python -m simulators.wallclock")
    parser.add_argument("--skew-s", type=float, required=True, help="Seconds to add (or -).")
    parser.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    args = parser.parse_args(argv)
    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        parser.error("give the program to run after --")
    install_skew(args.skew_s)
    script = _script_path(program[0])
    sys.argv = [script, *program[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
