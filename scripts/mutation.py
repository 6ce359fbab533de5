"""Mutation testing of the core modules with mutmut (`make mutation`, `make mutation MODULE=query`).

Each module in pyproject's `[tool.splatseg.mutation.modules]` names its source file and the fast
tests that cover it. For each module asked for, this runs mutmut in a fresh process with mutmut's
`[tool.mutmut]` settings narrowed to that one file and those tests (mutmut then learns which of
those tests reach each function and runs only them against each mutant), and prints the kill rate
and the surviving mutants (`mutmut show NAME` prints one's diff). Results stay in `mutants/`
(git-ignored); a module already run is not re-run unless its file or tests changed.

Never part of CI: a full run takes hours on two cores (the rasteriser alone most of that).

    python scripts/mutation.py [MODULE ...] [--max-children N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, dict]:
    """name -> {"source": path, "tests": [pytest node ids or files]} from pyproject.toml."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["tool"]["splatseg"]["mutation"]["modules"]


def run_one(name: str, spec: dict, max_children: int) -> None:
    """Runs mutmut on one module in this process (called in a child process per module)."""
    import mutmut.configuration as configuration

    cfg = configuration.config()
    cfg.only_mutate = [spec["source"]]
    cfg.pytest_add_cli_args_test_selection = list(spec["tests"])
    dotted = spec["source"].removesuffix(".py").replace("/", ".")
    from mutmut.__main__ import _run

    _run([f"{dotted}.*"], max_children)


def summarise(name: str, spec: dict) -> tuple[int, int, list[str]]:
    """(killed, total, surviving mutant names) of one module from mutmut's results file."""
    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / (spec["source"] + ".meta")
    if not meta.exists():
        return 0, 0, []
    codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
    status = {k: status_by_exit_code[v] for k, v in codes.items()}
    counts = Counter(status.values())
    killed = counts["killed"] + counts["timeout"] + counts["segfault"] + counts["caught by type check"]
    survivors = sorted(k for k, s in status.items() if s in ("survived", "no tests", "suspicious", "not checked"))
    print(f"{name}: {killed}/{len(status)} killed ({100.0 * killed / max(len(status), 1):.1f}%); "
          + ", ".join(f"{s} {c}" for s, c in sorted(counts.items())), flush=True)
    for k in survivors:
        print(f"    {status[k]}: {k}")
    return killed, len(status), survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names from [tool.splatseg.mutation.modules] (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    table = modules()
    os.chdir(ROOT)
    if args.one:
        run_one(args.one, table[args.one], args.max_children)
        return
    names = args.modules or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"mutation: unknown module {unknown[0]!r}; known: {', '.join(table)}")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "SPLATSEG_TEST_THREADS": "1"}
    totals = [0, 0]
    for name in names:
        print(f"== mutation: {name} ({table[name]['source']})", flush=True)
        code = subprocess.run([sys.executable, __file__, "--one", name, "--max-children", str(args.max_children)], env=env).returncode
        if code != 0:
            print(f"mutation: mutmut failed on {name} (exit {code})", flush=True)
    print("== kill rates")
    for name in names:
        killed, total, _ = summarise(name, table[name])
        totals[0] += killed
        totals[1] += total
    print(f"all: {totals[0]}/{totals[1]} killed ({100.0 * totals[0] / max(totals[1], 1):.1f}%)")


if __name__ == "__main__":
    main()
