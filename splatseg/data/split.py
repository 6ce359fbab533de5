"""The one train / test split of every stage (docs/FORMATS.md, "Train / test split").

Rule: views sorted by image name (stem); when a split is asked for, every `test_every`-th of them
(sorted index % test_every == 0) is held out. This is the INRIA 3DGS "llffhold" and gsplat
`test_every` convention, and it does not depend on the order a loader returns the views in.

`recon` writes the split it used as `split.json` beside `splats.ply`; `train` reads it when its
splats come from such a folder (so its held-out views are views the reconstruction never saw), and
the evaluation reads the run's held-out views from run.json.

split.json: {"rule": str, "test_every": int, "train": [stem, ...], "test": [stem, ...]} (names sorted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from splatseg.io.atomic import atomic_write

__all__ = ["SPLIT_NAME", "DEFAULT_TEST_EVERY", "RULE", "Split", "split_views", "write_split", "read_split", "split_beside"]

SPLIT_NAME = "split.json"
DEFAULT_TEST_EVERY = 8
"""The INRIA / gsplat default: every 8th view held out."""
RULE = "views sorted by image name; sorted index % test_every == 0 held out"


class SplitError(ValueError):
    """A split.json that is malformed or does not fit the scene; one-line message."""


def split_views(names: Sequence[str], test_every: int) -> tuple[list[int], list[int]]:
    """(train, test) indices into `names` (any order): sort the names, hold out every
    `test_every`-th one (sorted index 0, k, 2k, ...); `test_every` 0 holds none out.
    Both lists are in the order of `names`."""
    if int(test_every) != test_every or test_every < 0:
        raise SplitError(f"test_every must be an integer >= 0, got {test_every}")
    if test_every == 0:
        return list(range(len(names))), []
    order = sorted(range(len(names)), key=lambda i: names[i])
    held = set(order[::test_every])
    return [i for i in range(len(names)) if i not in held], [i for i in range(len(names)) if i in held]


@dataclass(frozen=True)
class Split:
    """A split by image names (as split.json stores it)."""

    train: list[str]
    test: list[str]
    test_every: int

    def indices(self, names: Sequence[str], where: str = "split.json") -> tuple[list[int], list[int]]:
        """(train, test) indices into `names`; SplitError if a split name is not among them.
        Views of `names` that the split does not list are training views."""
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.test if n not in index]
        if missing:
            raise SplitError(f"{where} holds out view {missing[0]!r}, which this scene does not have "
                             f"({len(missing)} of {len(self.test)} held-out views missing): is it the same scene?")
        test = sorted(index[n] for n in self.test)
        held = set(test)
        return [i for i in range(len(names)) if i not in held], test


def write_split(path: str | Path, names: Sequence[str], train: Sequence[int], test: Sequence[int], test_every: int) -> Path:
    """Write split.json (atomically) for the given indices into `names`; returns the path."""
    path = Path(path)
    body = {"rule": RULE, "test_every": int(test_every),
            "train": sorted(names[i] for i in train), "test": sorted(names[i] for i in test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write((json.dumps(body, indent=2) + "\n").encode())
    return path


def read_split(path: str | Path) -> Split:
    """Read a split.json; SplitError with a one-line message when malformed."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SplitError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise SplitError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(body, dict):
        raise SplitError(f"{path}: expected a JSON object")
    lists = {k: body.get(k) for k in ("train", "test")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SplitError(f"{path}: {key!r} must be a list of image names")
    every = body.get("test_every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise SplitError(f"{path}: 'test_every' must be an integer >= 0, got {every!r}")
    overlap = sorted(set(lists["train"]) & set(lists["test"]))
    if overlap:
        raise SplitError(f"{path}: view {overlap[0]!r} is both a training and a held-out view")
    return Split(train=list(lists["train"]), test=list(lists["test"]), test_every=every)


def split_beside(splats_path: str | Path) -> tuple[Path, Split] | None:
    """(path, split) of the split.json beside a splat file (a recon output folder), or None."""
    path = Path(splats_path).parent / SPLIT_NAME
    return (path, read_split(path)) if path.is_file() else None


def split_for_training(names: Sequence[str], test_every: int, splats_path: str | Path) -> tuple[list[int], list[int], str]:
    """(train, test, source) for `train`: no split when `test_every` is 0; otherwise the split.json
    beside the splats when it holds views out (the views their reconstruction never saw, whatever
    `test_every` says), else the rule. `source` says which, for the log and run.json."""
    if test_every == 0:
        return list(range(len(names))), [], "none"
    beside = split_beside(splats_path)
    if beside is not None and beside[1].test:
        path, split = beside
        train, test = split.indices(names, str(path))
        return train, test, str(path)
    train, test = split_views(names, test_every)
    source = f"every {test_every}th view by image name"
    if beside is not None:
        source += f" ({beside[0]} holds no view out: the splats were fit to every view)"
    return train, test, source
