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
import re
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


def narrow_config(spec: dict) -> None:
    """Makes mutmut read pyproject's [tool.mutmut] with `only_mutate` and the test selection of one
    module (it reloads its settings after resets, so the loader itself is wrapped)."""
    import mutmut.configuration as configuration

    read_pyproject = configuration._load_config

    def narrowed():
        cfg = read_pyproject()
        cfg.only_mutate = [spec["source"]]
        cfg.pytest_add_cli_args_test_selection = list(spec["tests"])
        return cfg

    configuration._load_config = narrowed
    configuration.reset_config()


def diff_line(spec: dict, mutant: str) -> str:
    """The changed lines of one mutant, on one line ("- old  + new")."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=Path(spec["source"]))
    return "  ".join(" ".join(line.split()) for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def run_one(name: str, spec: dict, max_children: int) -> None:
    """Runs mutmut on one module in this process (called in a child process per module)."""
    narrow_config(spec)
    # mutmut takes a copy newer than its source for one it mutated already: drop this module's copy
    # and results (another module's run copies this file over its mutants), so it is mutated afresh
    for stale in (ROOT / "mutants" / spec["source"], *(ROOT / "mutants").glob(spec["source"] + ".*")):
        stale.unlink(missing_ok=True)
    # the splat-transform oracle, found by the tests at REPO/node_modules (a copy would break its links)
    link = ROOT / "mutants" / "node_modules"
    link.parent.mkdir(exist_ok=True)
    if not link.exists() and (ROOT / "node_modules").exists():
        link.symlink_to(ROOT / "node_modules")
    dotted = spec["source"].removesuffix(".py").replace("/", ".")
    from mutmut.__main__ import _run

    _run([f"{dotted}.*"], max_children)
    # the survivors' diffs, kept while this module's mutants are still in mutants/
    killed, total, survivors = summarise(name, spec, quiet=True)
    diffs = {}
    for k in survivors:
        try:
            diffs[k] = diff_line(spec, k)
        except Exception as e:  # noqa: BLE001 - a listing, not a check
            diffs[k] = f"(no diff: {e})"
    (ROOT / "mutants" / (spec["source"] + ".survivors.json")).write_text(json.dumps(diffs, indent=1))


_STRING = re.compile(r"""(?:[rbfu]{0,2})("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")


def equivalent_kind(diff: str) -> str | None:
    """"message" when a mutant only changes the text of an error, warning or printed message,
    "progress" when it only changes a progress bar or its flag; None otherwise (a real survivor).
    `diff` is `diff_line`'s "- old  + new"."""
    old, _, new = diff.partition("  + ")
    old = old.removeprefix("- ")
    if ("tqdm(" in old or "progress" in old) and "tqdm(" in new or "progress: bool =" in old:
        return "progress"
    if any(k in old for k in ("raise ", "warn(", "print(", "Error(")):
        if _STRING.sub('""', old) == _STRING.sub('""', new) or re.search(r"(Error|warn|print)\(None\)", new):
            return "message"  # the text changed or was dropped; the exception and its type are kept
    return None


def summarise(name: str, spec: dict, quiet: bool = False) -> tuple[int, int, list[str]]:
    """(killed, total, surviving mutant names) of one module from mutmut's results file; prints
    them with the survivors' diffs unless `quiet`."""
    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / (spec["source"] + ".meta")
    if not meta.exists():
        return 0, 0, []
    codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
    status = {k: status_by_exit_code[v] for k, v in codes.items()}
    counts = Counter(status.values())
    killed = counts["killed"] + counts["timeout"] + counts["segfault"] + counts["caught by type check"]
    survivors = sorted(k for k, s in status.items() if s in ("survived", "no tests", "suspicious", "not checked"))
    if quiet:
        return killed, len(status), survivors
    print(f"{name}: {killed}/{len(status)} killed ({100.0 * killed / max(len(status), 1):.1f}%); "
          + ", ".join(f"{s} {c}" for s, c in sorted(counts.items())), flush=True)
    saved = ROOT / "mutants" / (spec["source"] + ".survivors.json")
    diffs = json.loads(saved.read_text()) if saved.exists() else {}
    kinds = {k: equivalent_kind(diffs.get(k, "")) for k in survivors}
    equivalent = sum(1 for v in kinds.values() if v)
    real = len(status) - equivalent
    print(f"    equivalent (messages {sum(v == 'message' for v in kinds.values())}, progress {sum(v == 'progress' for v in kinds.values())}): "
          f"{killed}/{real} of the others killed ({100.0 * killed / max(real, 1):.1f}%)")
    for k in sorted(survivors, key=lambda k: (kinds[k] or "", k)):
        print(f"    {kinds[k] or status[k]}: {k.rsplit('.', 1)[-1]}: {diffs.get(k, '')}")
    return killed, real, survivors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names from [tool.splatseg.mutation.modules] (default: all)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help="print the kill rates of earlier runs without running")
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
    for name in [] if args.report else names:
        print(f"== mutation: {name} ({table[name]['source']})", flush=True)
        code = subprocess.run([sys.executable, __file__, "--one", name, "--max-children", str(args.max_children)], env=env).returncode
        if code != 0:
            print(f"mutation: mutmut failed on {name} (exit {code})", flush=True)
    print("== kill rates")
    for name in names:
        killed, total, _ = summarise(name, table[name])
        totals[0] += killed
        totals[1] += total
    print(f"all: {totals[0]}/{totals[1]} non-equivalent mutants killed ({100.0 * totals[0] / max(totals[1], 1):.1f}%)")


if __name__ == "__main__":
    main()
