"""datasets/classes.py: class-name parsing, the colour table, class-weight options, classes.json."""
from __future__ import annotations

import itertools
import json
import math

import pytest

from common.errors import ConfigError, DataError
from datasets import classes
from datasets.classes import (
    PET_CLASS_NAMES,
    class_colors,
    generic_class_names,
    palette_color,
    parse_class_names,
    parse_class_weights,
    read_classes_file,
    resolve_class_names,
    write_classes_file,
)

CAT, DOG = (0, 102, 66), (155, 10, 116)


def test_class_names_are_parsed_in_order_with_spaces_dropped():
    assert parse_class_names("background,cat,dog") == PET_CLASS_NAMES
    assert parse_class_names(" background , person,car ") == ("background", "person", "car")


@pytest.mark.parametrize("text, message", [
    ("background,cat,cat", "unique; repeated: cat"),
    ("background,,dog", "non-empty name"),
    ("background", "at least 2 classes"),
    ("", "non-empty name"),
])
def test_bad_class_names_are_a_config_error_naming_the_option(text, message):
    with pytest.raises(ConfigError, match=f"--classes: .*{message}"):
        parse_class_names(text)


def test_unrecorded_names_are_the_pets_for_three_classes_and_generic_otherwise():
    assert resolve_class_names(None, 3) == ("background", "cat", "dog")
    assert resolve_class_names(None, 5) == ("background", "class_1", "class_2", "class_3",
                                            "class_4")
    assert generic_class_names(2) == ("background", "class_1")
    assert resolve_class_names(["bg", "a", "b"], 3) == ("bg", "a", "b")
    with pytest.raises(ConfigError, match="2 class names .* for a model of 3 classes"):
        resolve_class_names(["bg", "a"], 3)


def test_pet_classes_get_exactly_the_tutorials_colours_and_no_background_colour():
    assert class_colors(PET_CLASS_NAMES) == {1: CAT, 2: DOG}
    # By name, wherever the class sits; "_background_" (VOC tools) is background too.
    assert class_colors(["_background_", "dog", "cat"]) == {1: DOG, 2: CAT}


def test_other_classes_get_their_index_palette_colour():
    names = ("background", "person", "cat", "car")
    assert class_colors(names) == {1: palette_color(1), 2: CAT, 3: palette_color(3)}
    assert palette_color(1) == (230, 25, 25)   # the table's first entries are fixed
    # A second spelling of a pet name is another class and gets its own colour.
    colours = class_colors(["background", "cat", "Cat"])
    assert colours[1] == CAT and colours[2] == palette_color(2)


def test_palette_is_deterministic_distinct_and_never_near_the_pet_colours():
    table = [palette_color(i) for i in range(256)]
    assert table == [palette_color(i) for i in range(256)]
    for colour in table:
        assert all(0 <= c <= 255 for c in colour)
        assert min(math.dist(colour, pet) for pet in (CAT, DOG)) >= 60
    # The hand-picked part (VOC's 21 classes fit in it): far from the pets and from each other.
    fixed = table[:len(classes._PALETTE)]
    assert len(set(fixed)) == len(fixed) == 24
    assert min(math.dist(colour, pet) for colour in fixed for pet in (CAT, DOG)) >= 100
    assert min(math.dist(a, b) for a, b in itertools.combinations(fixed, 2)) >= 70
    # Generated colours: neighbouring indices stay visibly apart.
    assert min(math.dist(table[i], table[i + 1]) for i in range(24, 255)) >= 40


@pytest.mark.parametrize("text, expected", [
    (None, None), ("none", None), ("NONE", None), ("auto", "auto"),
    ("1,2.5,0", (1.0, 2.5, 0.0)), ([0.5, 1, 2], (0.5, 1.0, 2.0)),
])
def test_class_weight_options(text, expected):
    assert parse_class_weights(text, 3) == expected


@pytest.mark.parametrize("text, message", [
    ("1,2", "2 weights for 3 classes"),
    ("1,x,2", "expected none, auto or 3 comma-separated numbers"),
    ("1,-1,2", "finite and >= 0"),
    ("0,0,0", "at least one > 0"),
    ("1,nan,2", "finite and >= 0"),
])
def test_bad_class_weights_are_a_config_error_naming_the_option(text, message):
    with pytest.raises(ConfigError, match=f"--class-weights: .*{message}"):
        parse_class_weights(text, 3)


def test_classes_file_round_trips_and_bad_files_name_themselves(tmp_path):
    path = write_classes_file(tmp_path, ["background", "cat", "dog", "bird"])
    assert path == tmp_path / "classes.json"
    assert json.loads(path.read_text())["classes"] == ["background", "cat", "dog", "bird"]
    assert read_classes_file(tmp_path) == {"classes": ("background", "cat", "dog", "bird"),
                                           "label_format": "index", "ignore_label": 255}
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": ["background", "cat", "cat"]}')
    with pytest.raises(DataError, match=r"bad.json: class names must be unique"):
        read_classes_file(bad)
    bad.write_text('{"classes": ["a", "b", "c"], "ignore_label": 1}')
    with pytest.raises(DataError, match=r"bad.json: ignore_label must be an integer in \[3, 255\]"):
        read_classes_file(bad)
    bad.write_text("[1, 2")
    with pytest.raises(DataError, match="classes file .*bad.json is not readable JSON"):
        read_classes_file(bad)
    with pytest.raises(DataError, match="missing.json not found"):
        read_classes_file(tmp_path / "missing.json")
