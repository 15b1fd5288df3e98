"""learning/run_info.py: test.py and draw.py learn the label format, class names and colours
from the run folder (config.json's labels section, or the model config of older folders)."""
from __future__ import annotations

import json

import pytest

from common.errors import ConfigError
from datasets.classes import class_colors
from datasets.labels import TRIMAP, LabelFormat, Palette
from learning.run_info import LABELS_KEY, labels_entry, read_run_labels


def write_model_config(folder, num_classes, class_names=None):
    config = {"num_classes": num_classes, "input_shape": [64, 64, 3]}
    if class_names is not None:
        config["class_names"] = list(class_names)
    (folder / "model_config.json").write_text(json.dumps({"class_name": "GCN",
                                                          "config": config}))


def test_the_labels_section_of_config_json_gives_format_names_and_colours(tmp_path):
    palette = Palette(colors=((0, 0, 0), (128, 0, 0), (0, 128, 0)),
                      ignore_colors=((224, 224, 192),), source="voc3.json")
    fmt = LabelFormat("palette", ("background", "boat", "dog"), palette)
    (tmp_path / "config.json").write_text(json.dumps(
        {"config": {}, LABELS_KEY: labels_entry(fmt, class_weights=[1.0, 2.0, 3.0])}))
    write_model_config(tmp_path, 3)     # not consulted: config.json says everything
    run = read_run_labels(tmp_path)
    assert run.label_format == fmt and run.class_names == ("background", "boat", "dog")
    assert run.colors == class_colors(run.class_names)
    assert run.colors[2] == (155, 10, 116)       # a class named dog keeps the tutorial's colour
    assert run.legend and run.source.endswith("config.json")


@pytest.mark.parametrize("num_classes", [3, 2])
def test_a_run_folder_from_before_label_formats_is_a_pet_run(tmp_path, num_classes):
    # Every reader read trimaps then; a 2-class model is refused by test.py's class check.
    (tmp_path / "config.json").write_text(json.dumps({"config": {}, "model": {}}))
    write_model_config(tmp_path, num_classes)
    run = read_run_labels(tmp_path)
    assert run.label_format == TRIMAP and run.class_names == ("background", "cat", "dog")
    assert run.colors == {1: (0, 102, 66), 2: (155, 10, 116)} and not run.legend


def test_a_model_saved_with_other_names_reads_index_masks(tmp_path):
    write_model_config(tmp_path, 4, ("background", "road", "car", "sky"))
    run = read_run_labels(tmp_path)       # no config.json at all: SegNet.save from Python
    assert run.label_format == LabelFormat("index", ("background", "road", "car", "sky"))
    assert run.legend


def test_unreadable_or_missing_run_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model_config\.json not found"):
        read_run_labels(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ConfigError, match=r"cannot read .*config\.json"):
        read_run_labels(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({LABELS_KEY: {"label_format": {
        "kind": "trimap", "class_names": ["a", "b"]}}}))
    with pytest.raises(ConfigError, match=r"config\.json: labels: trimap masks hold 3 classes"):
        read_run_labels(tmp_path)
