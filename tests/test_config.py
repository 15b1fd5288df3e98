"""The typed training config: one message per bad option, typed loading, resume rules, the
parser built from the field declarations."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

from common.cli import size_argument
from common.errors import ConfigError
from learning.config import (DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig,
                             add_options, flag_of)


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser()
    for section in (DataConfig, ModelConfig, OptimConfig, RunConfig):
        add_options(result, section, types={"image_size": size_argument})
    return result


def test_defaults_are_the_tutorials():
    optim = OptimConfig()
    assert (optim.batch_size, optim.num_epochs, optim.init_learning_rate, optim.momentum,
            optim.learning_rate_patience, optim.learning_rate_decay, optim.eps,
            optim.score_threshold) == (8, 300, 1e-3, 0.9, 10, 0.1, 1e-8, 1e-4)
    assert DataConfig().image_size == (512, 512) and DataConfig().val_fraction == 0.1
    # No class count by default: train.py resolves it (the --classes names, a palette file, the
    # data folder's classes.json, else 3) and saves the number it used.
    assert ModelConfig().num_classes is None
    assert (DataConfig().label_format, DataConfig().palette) == ("auto", None)
    assert (ModelConfig().classes, ModelConfig().class_weights) == (None, "none")


@pytest.mark.parametrize("field, value, fragment", [
    ("batch_size", 0, "--batch-size (batch_size) must be a positive integer, got 0"),
    ("num_epochs", 2.5, "--epochs (num_epochs) must be a positive integer"),
    ("init_learning_rate", 0.0, "--lr (init_learning_rate) must be > 0"),
    ("momentum", 1.0, "--momentum (momentum) must be in [0, 1)"),
    ("learning_rate_patience", -1, "--patience (learning_rate_patience) must be a non-negative"),
    ("learning_rate_decay", 1.5, "--decay (learning_rate_decay) must be in (0, 1]"),
    ("eps", -1e-9, "--eps (eps) must be >= 0"),
    ("score_threshold", float("nan"), "--score-threshold (score_threshold) must be >= 0"),
    ("warmup_steps", -3, "--warmup-steps (warmup_steps) must be a non-negative integer"),
    ("clip_norm", 0.0, "--clip-norm (clip_norm) must be > 0"),
    ("ema_momentum", 1.0, "--ema-momentum (ema_momentum) must be in (0, 1)"),
    ("eval_batch_size", 0, "--eval-batch-size (eval_batch_size) must be a positive integer"),
    ("steps_per_execution", 0, "--steps-per-execution (steps_per_execution) must be a positive"),
    ("jit_compile", "yes", "--jit-compile (jit_compile) must be one of auto, on, off"),
    ("checkpoint_every", -1.0, "--checkpoint-every (checkpoint_every) must be >= 0"),
    ("log_every", 0, "--log-every (log_every) must be a positive integer"),
    ("seed", -1, "--seed (seed) must be a non-negative integer"),
])
def test_each_bad_hyperparameter_gets_its_own_message_naming_its_flag(field, value, fragment):
    with pytest.raises(ConfigError) as caught:
        OptimConfig(**{field: value})
    assert fragment in str(caught.value)
    assert ";" not in str(caught.value)          # exactly one problem reported


def test_every_bad_option_of_every_section_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_options({"batch_size": 0, "learning_rate_decay": 2.0,
                                  "val_fraction": 1.0, "num_classes": 1})
    message = str(caught.value)
    for flag in ("--batch-size", "--decay", "--val-fraction", "--num-classes"):
        assert flag in message
    assert message.count(";") == 3


def test_the_parser_holds_only_the_given_options_and_maps_them_by_name():
    args = vars(parser().parse_args(["--lr", "0.03", "--epochs", "4", "--image-size", "96",
                                     "--mixed-precision", "--nesterov"]))
    assert args == {"init_learning_rate": 0.03, "num_epochs": 4, "image_size": (96, 96),
                    "mixed_precision": "bf16", "nesterov": True}
    config = TrainConfig.from_options(args)
    assert config.optim.init_learning_rate == 0.03 and config.optim.num_epochs == 4
    assert config.data.image_size == (96, 96) and config.run.mixed_precision == "bf16"
    assert config.optim.batch_size == 8                # untouched fields keep their default
    assert flag_of("init_learning_rate") == "--lr"


def test_help_shows_the_dataclass_defaults():
    text = parser().format_help()
    assert "initial learning rate (default: 0.001)" in text
    assert "(default: 512x512)" in text


def test_config_round_trips_through_json_and_rejects_wrong_types_with_the_file_named():
    config = TrainConfig.from_options({"image_size": (96, 128), "clip_norm": 5.0})
    document = json.loads(json.dumps(config.to_dict()))
    assert TrainConfig.from_dict(document, source="config.json") == config
    document["optim"]["batch_size"] = "8"
    with pytest.raises(ConfigError, match=r"config.json: optim: batch_size must be int, got '8'"):
        TrainConfig.from_dict(document, source="config.json")
    document["optim"]["batch_size"] = 8
    document["data"]["image_size"] = [96]
    with pytest.raises(ConfigError, match=r"data: image_size must be tuple"):
        TrainConfig.from_dict(document, source="config.json")
    document["data"]["image_size"] = [96, 96]
    document["optim"]["batch_sise"] = 8
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) batch_sise"):
        TrainConfig.from_dict(document, source="config.json")
    with pytest.raises(ConfigError, match="expected the sections"):
        TrainConfig.from_dict({"args": {}}, source="config.json")


def test_a_hand_edited_value_out_of_range_is_caught_on_load():
    document = TrainConfig().to_dict()
    document["optim"]["learning_rate_decay"] = 0.0
    with pytest.raises(ConfigError, match=r"config.json: optim: --decay .* must be in \(0, 1\]"):
        TrainConfig.from_dict(document, source="config.json")


def test_resume_accepts_only_options_that_do_not_change_the_computation():
    saved = TrainConfig.from_options({"num_epochs": 5, "init_learning_rate": 0.1})
    changes = TrainConfig.resume_changes(saved, {"num_epochs": 9, "save_dir": "runs/x",
                                                 "init_learning_rate": 0.1})
    assert saved.replace(changes).optim.num_epochs == 9
    with pytest.raises(ConfigError) as caught:
        TrainConfig.resume_changes(saved, {"init_learning_rate": 0.2, "batch_size": 4})
    message = str(caught.value)
    assert "--lr (saved 0.1, given 0.2)" in message and "--batch-size (saved 8, given 4)" in message
    assert "--epochs" in message                      # the list of what may change


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        OptimConfig().batch_size = 4   # type: ignore[misc]


def test_the_label_options_are_checked_and_agree_with_each_other():
    model = ModelConfig(classes="background, cat,dog,bird")
    assert model.class_names == ("background", "cat", "dog", "bird")
    ModelConfig(classes="background,cat,dog,bird", num_classes=4, class_weights="1,2,3,4")
    for kwargs, fragment in [
        (dict(classes="background,cat", num_classes=3),
         "--classes (classes) names 2 classes (background, cat) but --num-classes (num_classes) "
         "is 3"),
        (dict(classes="a,a"), "class names must be unique; repeated: a"),
        (dict(classes="a,b,c", class_weights="1,2"), "2 weights for 3 classes"),
        (dict(num_classes=3, class_weights="1,2,x"), "--class-weights (class_weights): expected"),
        (dict(class_weights="1,-2"), "finite and >= 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            ModelConfig(**kwargs)
    assert ModelConfig(class_weights="auto").class_weights == "auto"
    with pytest.raises(ConfigError, match="--label-format .* must be one of auto, trimap"):
        DataConfig(label_format="rgb")
    args = vars(parser().parse_args(["--label-format", "palette", "--palette", "voc.json",
                                     "--classes", "a,b", "--class-weights", "auto"]))
    config = TrainConfig.from_options(args)
    assert (config.data.label_format, config.data.palette) == ("palette", "voc.json")
    assert (config.model.classes, config.model.class_weights) == ("a,b", "auto")
    with pytest.raises(SystemExit):
        parser().parse_args(["--label-format", "rgb"])


def test_a_config_saved_before_the_label_options_loads_with_their_defaults():
    document = TrainConfig.from_options({"num_classes": 3}).to_dict()
    for section, name in (("data", "label_format"), ("data", "palette"), ("model", "classes"),
                          ("model", "class_weights")):
        del document[section][name]
    config = TrainConfig.from_dict(document, source="config.json")
    assert config.model.num_classes == 3 and config.data.label_format == "auto"
    assert config.model.class_weights == "none"
