"""What a run folder says about its data: how its masks were read, the class names, colours.

train.py saves the resolved label format (``datasets.labels.LabelFormat``: trimap, index or
palette masks, the class names, the palette) in the run's ``config.json`` under ``"labels"``.
test.py and draw.py call ``read_run_labels(run_dir)`` once, near the top, and pass
``label_format`` to the data layer (``list_examples``, ``load_examples``, ``load_label``) and
``class_names`` / ``colors`` / ``legend`` to the drawing code, so neither needs a flag: a model
reads test data the way it was trained, and prints and draws its classes by name.

A folder without that section (trained before label formats existed, or saved from Python
with ``SegNet.save``) is a pet run, read as trimaps, as every reader did before formats
existed; its class count is checked against the data's by test.py as before
(``check_model_classes``). Only a model that records class names other than the pet names
(``SegNet(class_names=...)``, saved from Python) says what its classes are: index masks with
those names.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from datasets.classes import PET_CLASS_NAMES, class_colors
from datasets.labels import TRIMAP, LabelFormat
from learning.run_folder import RunFolder
from models.saving import MODEL_CONFIG_NAME

__all__ = ["LABELS_KEY", "RunLabels", "labels_entry", "read_run_labels"]

LABELS_KEY = "labels"                # the section of config.json written by labels_entry


@dataclasses.dataclass(frozen=True)
class RunLabels:
    """The data side of a trained model.

    Attributes:
        label_format: how the run's masks were read (pass it to the data layer).
        class_names: name of each class index.
        colors: class index -> RGB drawing colour (``datasets.classes.class_colors``).
        legend: whether drawings carry a legend: yes, unless the classes are the tutorial's
            background/cat/dog (whose drawings keep the tutorial's look).
        source: the file the information came from.
    """

    label_format: LabelFormat
    class_names: tuple[str, ...]
    colors: dict[int, tuple[int, int, int]]
    legend: bool
    source: str


def labels_entry(label_format: LabelFormat, **extra: Any) -> dict[str, Any]:
    """The ``"labels"`` section train.py writes into config.json (``extra``: more JSON-ready
    facts for the reader, e.g. the class weights and the data check's summary)."""
    return {"label_format": label_format.to_dict(), **extra}


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None


def _from_model_config(run_dir: Path) -> tuple[LabelFormat, str]:
    """The fallback for folders without a labels section (see the module docstring)."""
    path = run_dir / MODEL_CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {run_dir} a run folder written by train.py?")
    document = _read_json(path)
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or not isinstance(config.get("num_classes"), int):
        raise ConfigError(f"{path}: no model config with num_classes")
    names = config.get("class_names")
    if names is None or tuple(names) == PET_CLASS_NAMES:
        return TRIMAP, str(path)
    try:
        return LabelFormat("index", tuple(names)), str(path)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_run_labels(run_dir: str | os.PathLike) -> RunLabels:
    """The label format, class names and drawing colours of the run in `run_dir`.

    Raises:
        ConfigError: config.json or model_config.json unreadable or malformed (named), or no
            model_config.json in a folder without a labels section.
    """
    run_dir = Path(run_dir)
    path = run_dir / RunFolder.CONFIG
    document = _read_json(path) if path.is_file() else None
    section = document.get(LABELS_KEY) if isinstance(document, dict) else None
    if section is not None:
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: '{LABELS_KEY}' must be an object")
        label_format = LabelFormat.from_dict(section.get("label_format"),
                                             source=f"{path}: {LABELS_KEY}")
        source = str(path)
    else:
        label_format, source = _from_model_config(run_dir)
    names = label_format.class_names
    return RunLabels(label_format=label_format, class_names=names, colors=class_colors(names),
                     legend=names != PET_CLASS_NAMES, source=source)
