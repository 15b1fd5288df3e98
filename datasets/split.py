"""The one seeded split of the project, and the check that a test set was not trained on.

``seeded_split`` is what train.py (validation), ``python -m datasets.pets`` (test set) and
``python -m datasets.synthetic`` (test set) all call, so a given list of names, fraction and seed
gives the same split everywhere:

1. the items are sorted by name (so the input order never matters);
2. ``numpy.random.default_rng(seed).permutation(n)`` orders them;
3. with ``max_items`` only the first ``max_items`` of that order are used (a seeded subset);
4. the first ``held_out_count(n, fraction)`` of the order are held out, the rest kept;
5. both parts are returned sorted by name.

The count rounds **half up** (``floor(n * fraction + 0.5)``: 2.5 -> 3 and 1.5 -> 2, where
Python's ``round`` rounds halves to even and gives 2 for both), is at least 1 whenever
``fraction > 0`` (a share asked for is never silently empty) and at most ``n - 1`` (something
is always left to train on). A single item is never held out.

``split.json`` (``SPLIT_FILE``) is where train.py records its split in the run folder:
``{"train": [names], "val": [names]}`` with image file names.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from common.errors import ConfigError

__all__ = ["SPLIT_FILE", "held_out_count", "seeded_split", "split_leakage"]

logger = logging.getLogger(__name__)

SPLIT_FILE = "split.json"

T = TypeVar("T")


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` items ``seeded_split`` holds out: ``floor(n * fraction + 0.5)``,
    at least 1 when ``fraction > 0``, at most ``n - 1``; 0 when ``n < 2`` or ``fraction == 0``.
    """
    if fraction <= 0 or n < 2:
        return 0
    return min(max(1, math.floor(n * fraction + 0.5)), n - 1)


def seeded_split(items: Iterable[T], fraction: float, seed: int, *,
                 max_items: int | None = None,
                 key: Callable[[T], str] | None = None) -> tuple[list[T], list[T]]:
    """Split ``items`` into ``(kept, held_out)`` by the rule of the module docstring.

    Args:
        items: names, or objects named by ``key`` (e.g. ``Example``s with
            ``key=lambda e: e.name``); names must be unique.
        fraction: share held out, in ``[0, 1)``.
        seed: a non-negative int; the same seed and names give the same split.
        max_items: use only a seeded subset of this many items (None: all).
        key: the name of an item (default: the item itself).

    Returns:
        ``(kept, held_out)``, each sorted by name.

    Raises:
        ConfigError: ``fraction``, ``seed`` or ``max_items`` out of range, or repeated names.
    """
    name_of = key if key is not None else (lambda item: item)
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"the held-out fraction must be in [0, 1), got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"the split seed must be a non-negative integer, got {seed!r}")
    if max_items is not None and max_items < 1:
        raise ConfigError(f"max_items must be at least 1, got {max_items}")
    ordered = sorted(items, key=name_of)
    names = [name_of(item) for item in ordered]
    repeated = sorted({a for a, b in zip(names, names[1:]) if a == b})
    if repeated:
        raise ConfigError(f"seeded_split needs unique names; repeated: {repeated[:5]}")
    order = np.random.default_rng(seed).permutation(len(ordered))
    if max_items is not None:
        order = order[:max_items]
    count = held_out_count(len(order), fraction)
    held = sorted((ordered[i] for i in order[:count]), key=name_of)
    kept = sorted((ordered[i] for i in order[count:]), key=name_of)
    return kept, held


def split_leakage(names: Sequence[str], run_dir: str | os.PathLike) -> list[str]:
    """The names among ``names`` (image file names of a test set) that the run in ``run_dir``
    trained or validated on, according to its ``split.json``; compared by file stem, so
    ``Bombay_1.png`` matches a trained ``Bombay_1.jpg``. Sorted.

    A run folder without ``split.json`` (a model not written by train.py) gives ``[]``; an
    unreadable one gives ``[]`` with a warning: this is a check, never a reason to stop.
    """
    path = os.path.join(os.fspath(run_dir), SPLIT_FILE)
    if not os.path.isfile(path):
        logger.debug("%s not found: cannot check the test set against the training split", path)
        return []
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
        used = [name for part in ("train", "val") for name in document.get(part, [])]
        used_stems = {os.path.splitext(str(name))[0] for name in used}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        logger.warning("cannot read %s (%s): the test set was not checked against the run's "
                       "training split", path, error)
        return []
    return sorted(name for name in names if os.path.splitext(name)[0] in used_stems)
