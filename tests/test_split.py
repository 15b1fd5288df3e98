"""datasets/split.py: the one seeded split (its exact contract) and the split-leakage check."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.errors import ConfigError
from datasets.examples import Example
from datasets.split import SPLIT_FILE, held_out_count, seeded_split, split_leakage


def test_the_split_is_the_documented_permutation_of_the_sorted_names():
    names = [f"pet_{i:02d}" for i in range(20)]
    kept, held = seeded_split(names[::-1], 0.25, seed=4)
    # By hand: sort, permute with default_rng(4), hold out the first round(20 * 0.25) = 5.
    order = np.random.default_rng(4).permutation(20)
    assert held == sorted(names[i] for i in order[:5])
    assert kept == sorted(names[i] for i in order[5:])


def test_the_split_depends_on_names_and_seed_only():
    names = [f"pet_{i}" for i in range(100)]
    kept, held = seeded_split(names, 0.1, 0)
    assert (len(kept), len(held)) == (90, 10)
    assert sorted(kept + held) == sorted(names) and not set(kept) & set(held)
    assert kept == sorted(kept) and held == sorted(held)
    assert seeded_split(names[::-1], 0.1, 0) == (kept, held)
    assert seeded_split(names, 0.1, 1)[1] != held


@pytest.mark.parametrize("n, fraction, count", [
    (10, 0.25, 3),    # 2.5 rounds half up (Python's round would give 2)
    (10, 0.15, 2),    # 1.5 -> 2
    (12, 0.125, 2),   # 1.5 -> 2
    (10, 0.04, 1),    # 0.4 -> 0, but a share asked for is never empty
    (10, 0.0, 0),
    (2, 0.9, 1),      # 1.8 -> 2, but one item is always left to train on
    (1, 0.5, 0),      # a single item is never held out
    (4337, 0.1, 434),
])
def test_held_out_count_rounds_half_up_at_least_one_at_most_n_minus_one(n, fraction, count):
    assert held_out_count(n, fraction) == count
    assert len(seeded_split([f"x{i}" for i in range(n)], fraction, 0)[1]) == count


def test_max_items_takes_a_seeded_subset_before_the_split():
    names = [f"pet_{i:02d}" for i in range(30)]
    kept, held = seeded_split(names, 0.2, 7, max_items=10)
    order = np.random.default_rng(7).permutation(30)[:10]
    assert held == sorted(names[i] for i in order[:2])
    assert kept == sorted(names[i] for i in order[2:])


def test_objects_are_split_by_their_key():
    examples = [Example(f"{n}.jpg", f"/d/{n}.jpg") for n in ("b", "a", "c", "d")]
    kept, held = seeded_split(examples, 0.5, 0, key=lambda e: e.name)
    names = seeded_split([e.name for e in examples], 0.5, 0)
    assert ([e.name for e in kept], [e.name for e in held]) == names


@pytest.mark.parametrize("kwargs, message", [
    (dict(fraction=1.0, seed=0), r"fraction must be in \[0, 1\), got 1.0"),
    (dict(fraction=-0.1, seed=0), "fraction must be in"),
    (dict(fraction=0.1, seed=-1), "seed must be a non-negative integer"),
    (dict(fraction=0.1, seed=0, max_items=0), "max_items must be at least 1"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        seeded_split(["a", "b"], **kwargs)


def test_repeated_names_are_refused():
    with pytest.raises(ConfigError, match=r"unique names; repeated: \['a'\]"):
        seeded_split(["a", "a", "b"], 0.5, 0)


def test_split_leakage_names_test_images_the_run_trained_or_validated_on(tmp_path):
    (tmp_path / SPLIT_FILE).write_text(json.dumps(
        {"train": ["Bombay_1.jpg", "pug_2.jpg"], "val": ["beagle_3.jpg"]}))
    test_names = ["Bombay_1.png", "beagle_3.jpg", "boxer_9.jpg"]
    assert split_leakage(test_names, tmp_path) == ["Bombay_1.png", "beagle_3.jpg"]
    assert split_leakage(["boxer_9.jpg"], tmp_path) == []


def test_split_leakage_without_a_readable_split_json_is_empty(tmp_path, caplog):
    assert split_leakage(["a.jpg"], tmp_path) == []  # not a train.py run: nothing to compare
    (tmp_path / SPLIT_FILE).write_text("{not json")
    assert split_leakage(["a.jpg"], tmp_path) == []
    assert "cannot read" in caplog.text and "not checked" in caplog.text
