"""``python -m bench NAME [--json FILE]``: run one benchmark or ``all``, print and save results.

A benchmark is a module of this package with ``BENCHMARK = "name"`` and ``run() -> list[Result]``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

import bench
from bench.results import Result, print_table


def discover() -> dict[str, Callable[[], list[Result]]]:
    """Every benchmark module of the package, by its BENCHMARK name."""
    found: dict[str, Callable[[], list[Result]]] = {}
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"bench.{info.name}")
        name = getattr(module, "BENCHMARK", None)
        if isinstance(name, str):
            found[name] = module.run
    return found


def main(argv: list[str] | None = None) -> int:
    benchmarks = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*benchmarks, "all"], help="benchmark to run")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    names = list(benchmarks) if args.name == "all" else [args.name]
    results: list[Result] = []
    for name in names:
        print(f"==> {name}", file=sys.stderr)
        results += benchmarks[name]()
    print_table(results)
    if args.json:
        payload = [r.to_json() for r in results]
        args.json.write_text(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
