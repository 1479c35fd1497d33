"""``python -m bench NAME [--json FILE]``: run one benchmark or ``all``, print and save results."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from bench import intake
from bench.results import Result, print_table

BENCHMARKS: dict[str, Callable[[], list[Result]]] = {
    "intake": intake.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="benchmark to run")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    results: list[Result] = []
    for name in names:
        print(f"==> {name}", file=sys.stderr)
        results += BENCHMARKS[name]()
    print_table(results)
    if args.json:
        payload = [r.to_json() for r in results]
        args.json.write_text(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
