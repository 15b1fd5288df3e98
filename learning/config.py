"""The typed training configuration: one frozen dataclass per concern, validated once, here.

``TrainConfig`` is everything train.py needs, in four sections (Model Garden's experiment
config has the same shape)::

    TrainConfig
      data:  DataConfig    which images, at which size, how they are split and read
      model: ModelConfig   the network and its loss
      optim: OptimConfig   the Optimizer's hyperparameters (the tutorial's constructor + ours)
      run:   RunConfig     where the run lives and how it executes

Each field is declared once, with its default, its command-line flag and its help text
(``option(...)``): train.py builds its parser from these declarations (``add_options``), maps
the parsed options back onto the fields by name (``TrainConfig.from_options``), writes the
resolved config to ``config.json`` with ``dataclasses.asdict`` and, on ``--resume``, rebuilds
it from that file (``TrainConfig.from_dict``, type-checked, so a hand-edited file gets a clear
error) and compares it with the command line (``resume_changes``).

Validation happens in ``__post_init__``: every bad value gets its own message naming the
field and its flag, and all of them are raised together as one ``ConfigError``, so a user fixes
a command line in one go. ``Optimizer`` builds an ``OptimConfig`` from its keyword arguments, so
the library and the command line share the same checks.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping, Sequence

from common.errors import ConfigError
from datasets.classes import check_class_count, parse_class_names, parse_class_weights
from datasets.decode import MAX_PIXELS
from datasets.labels import LABEL_FORMATS
from learning.precision import PRECISIONS

__all__ = [
    "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "option",
    "add_options", "resumable_fields", "PRECISIONS", "DISTRIBUTIONS", "JIT_COMPILE",
    "SCHEDULES",
]

DISTRIBUTIONS = ("auto", "none", "mirrored", "multiworker")
JIT_COMPILE = ("auto", "on", "off")
# --schedule: the tutorial's plateau decay, or a warm-up then an annealing to 0 over the run
# (learning/schedule.py).
SCHEDULES = ("plateau", "cosine", "linear")


def option(default: Any, flag: str | None, help: str, *, metavar: str | None = None,
           choices: Sequence[str] | None = None, resumable: bool = False,
           const: Any = None) -> Any:
    """A config field with its command-line flag and help (``flag=None``: not on the CLI).

    ``resumable``: the value may change when a run is resumed (it does not change what the run
    computes: e.g. the epoch count, how often to checkpoint, output options).
    ``const``: for an optional-argument flag, the value of the bare flag (``--mixed-precision``
    alone means bf16).
    """
    factory = {"default_factory": lambda: default} if isinstance(default, list) else {
        "default": default}
    return dataclasses.field(**factory, metadata={
        "flag": flag, "help": help, "metavar": metavar, "choices": choices,
        "resumable": resumable, "const": const})


class _Section:
    """Shared behaviour of the config sections: collected validation, typed loading."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError("; ".join(problems))

    def _problems(self) -> typing.Iterator[str]:
        return iter(())

    @classmethod
    def _name(cls, field_name: str) -> str:
        """How messages name a field: its flag when it has one (``--lr (init_learning_rate)``)."""
        flag = _FIELDS[cls][field_name].metadata.get("flag")
        return f"{flag} ({field_name})" if flag else field_name

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str) -> "_Section":
        """Build from a JSON object, checking each value's type; unknown keys are errors."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: expected an object, got {type(values).__name__}")
        fields = _FIELDS[cls]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        converted = {name: _typed(value, hints[name], f"{source}: {name}")
                     for name, value in values.items()}
        try:
            return cls(**converted)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from JSON) checked against the annotation ``hint``; ints pass as floats,
    lists as tuples. Raises ConfigError naming ``where`` and the expected type."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _typed(value, hint, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif typing.get_origin(hint) is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(hint)) and \
                all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"unsupported config type {hint!r}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where} must be {name}, got {value!r} ({type(value).__name__})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Which images train and validate, at which size, and how they are read."""

    data: str = option("data/catdog/train", "--data",
                       "labelled folder with images/ and masks/ (the pet layout)")
    image_size: tuple[int, int] = option(
        (512, 512), "--image-size", "training size N or HxW: images are cropped/padded (never "
        "resized) to it; sides must be multiples of 32", metavar="N|HxW")
    val_fraction: float = option(0.1, "--val-fraction",
                                 "share of the images held out for validation (seeded split)")
    max_images: int | None = option(None, "--max-images",
                                    "use only this many images (a seeded random subset)")
    augment: bool = option(False, "--augment", "random horizontal flip and scale-and-crop of "
                           "training images (masks resized nearest)")
    stream: bool = option(False, "--stream", "read images from disk every epoch (tf.data) "
                          "instead of loading them all into memory")
    max_pixels: int = option(MAX_PIXELS, "--max-pixels", "images with more pixels are skipped "
                             "(counted), checked from the file header before decoding; 0 lifts "
                             "the limit")
    label_format: str = option(
        "auto", "--label-format", "how the masks are read: trimap (Oxford pets: 1 animal, 2 "
        "background, 3 unknown; cat or dog by the name), index (value = class, 255 = ignore), "
        "palette (colour masks, see --palette), auto (decided from the first masks)",
        choices=LABEL_FORMATS)
    palette: str | None = option(
        None, "--palette", "JSON colour -> class table of palette masks (Pascal VOC: "
        "datasets/palettes/voc.json); it may name the classes (default: the VOC colour map)",
        metavar="FILE")

    def _problems(self) -> typing.Iterator[str]:
        name = self._name
        if not isinstance(self.data, str) or not self.data:
            yield f"{name('data')} must be a folder path"
        if not (isinstance(self.image_size, tuple) and len(self.image_size) == 2
                and all(_is_int(s) and s >= 1 for s in self.image_size)):
            yield f"{name('image_size')} must be two positive ints, got {self.image_size!r}"
        if not (_is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0):
            yield f"{name('val_fraction')} must be in [0, 1), got {self.val_fraction!r}"
        if self.max_images is not None and not (_is_int(self.max_images)
                                                and self.max_images >= 2):
            yield f"{name('max_images')} must be at least 2, got {self.max_images!r}"
        if not (_is_int(self.max_pixels) and self.max_pixels >= 0):
            yield f"{name('max_pixels')} must be a non-negative integer, got {self.max_pixels!r}"
        if self.label_format not in LABEL_FORMATS:
            yield (f"{name('label_format')} must be one of {', '.join(LABEL_FORMATS)}, got "
                   f"{self.label_format!r}")
        if self.palette is not None and not (isinstance(self.palette, str) and self.palette):
            yield f"{name('palette')} must be a file path, got {self.palette!r}"

    @property
    def pixel_limit(self) -> int | None:
        """``max_pixels`` as the data layer takes it (None: no limit)."""
        return self.max_pixels or None


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """The network (GCN on ResNet50V2) and its loss."""

    num_classes: int | None = option(
        None, "--num-classes", "output classes (default: one per --classes name, else the "
        "palette file's or the data folder's classes.json names, else 3: background, cat, dog); "
        "train.py saves the resolved number")
    pretrain: str = option("auto", "--pretrain", "backbone weights: auto (a file in "
                           "--pretrained-dir, else imagenet), imagenet, none (random init), or "
                           "a weights/checkpoint path")
    pretrained_dir: str = option("pretrained_models", "--pretrained-dir",
                                 "where --pretrain auto looks for weights files")
    weight_decay: float = option(1e-4, "--weight-decay",
                                 "L2 weight decay on convolution kernels (wd * sum(w^2) / 2)")
    bn_momentum: float | None = option(
        None, "--bn-momentum", "BatchNorm moving-average momentum (default: Keras' 0.99); 0.9 "
        "lets a from-scratch run's statistics catch up faster")
    kernel_size: int | None = option(None, "--kernel-size",
                                     "GCN kernel (default: image side / 32 - 1)")
    classes: str | None = option(
        None, "--classes", "class names in label order, e.g. background,cat,dog (saved with the "
        "model; test.py and draw.py show them)", metavar="NAMES")
    class_weights: str = option(
        "none", "--class-weights", "per-class weights of the cross-entropy: none, auto "
        "(median-frequency balancing from the training labels, logged and saved) or w0,w1,...",
        metavar="none|auto|W0,W1,...")

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """``--classes`` as a tuple of names (None when not given)."""
        return None if self.classes is None else parse_class_names(self.classes)

    def _problems(self) -> typing.Iterator[str]:
        name = self._name
        if self.num_classes is not None and not (_is_int(self.num_classes)
                                                 and self.num_classes >= 2):
            yield f"{name('num_classes')} must be at least 2, got {self.num_classes!r}"
        count = self.num_classes if _is_int(self.num_classes) else None
        if self.classes is not None:
            try:
                names = parse_class_names(self.classes, option=name("classes"))
            except ConfigError as error:
                yield str(error)
            else:
                try:
                    check_class_count(names, count, names_from=name("classes"),
                                      count_from=name("num_classes"))
                except ConfigError as error:
                    yield str(error)
                count = len(names)
        if not isinstance(self.class_weights, str):
            yield f"{name('class_weights')} must be none, auto or w0,w1,..., got " \
                  f"{self.class_weights!r}"
        else:
            # The weight count is checked once the class count is known (here, or when train.py
            # has resolved it from a palette or classes.json and replaces num_classes).
            words = self.class_weights.split(",")
            try:
                parse_class_weights(self.class_weights, count or len(words),
                                    option=name("class_weights"))
            except ConfigError as error:
                yield str(error)
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            yield f"{name('weight_decay')} must be >= 0, got {self.weight_decay!r}"
        if self.bn_momentum is not None and not (_is_number(self.bn_momentum)
                                                 and 0 < self.bn_momentum < 1):
            yield f"{name('bn_momentum')} must be in (0, 1), got {self.bn_momentum!r}"
        if self.kernel_size is not None and not (_is_int(self.kernel_size)
                                                 and self.kernel_size >= 1):
            yield f"{name('kernel_size')} must be a positive int, got {self.kernel_size!r}"


@dataclasses.dataclass(frozen=True)
class OptimConfig(_Section):
    """The hyperparameters of ``Optimizer`` / ``MomentumOptimizer`` (the tutorial's defaults).

    The first eight are the original constructor's; the rest are this port's additions.
    """

    batch_size: int = option(8, "--batch-size", "global batch size (split over all replicas)")
    num_epochs: int = option(300, "--epochs", "number of epochs", resumable=True)
    init_learning_rate: float = option(1e-3, "--lr", "initial learning rate")
    momentum: float = option(0.9, "--momentum", "SGD momentum")
    learning_rate_patience: int = option(
        10, "--patience", "epochs without improvement tolerated before the lr decays")
    learning_rate_decay: float = option(0.1, "--decay", "lr factor on a plateau")
    eps: float = option(1e-8, "--eps", "an lr decay smaller than this is skipped")
    score_threshold: float = option(1e-4, "--score-threshold",
                                    "relative improvement that counts as a new best")
    nesterov: bool = option(False, "--nesterov", "Nesterov momentum")
    warmup_steps: int = option(0, "--warmup-steps",
                               "raise the learning rate linearly from 0 over this many steps")
    schedule: str = option(
        "plateau", "--schedule", "learning-rate schedule after the warm-up: plateau (the "
        "tutorial's: decay on a plateau, --patience/--decay), or cosine / linear (anneal to 0 "
        "over all --epochs, whatever the scores; --patience/--decay unused)", choices=SCHEDULES)
    clip_norm: float | None = option(None, "--clip-norm", "clip gradients to this global norm "
                                     "(1.0 helps from scratch)")
    ema_momentum: float | None = option(
        None, "--ema-momentum", "evaluate and save an exponential moving average of the weights "
        "with this momentum (e.g. 0.99) instead of the noisy raw weights")
    eval_batch_size: int | None = option(
        None, "--eval-batch-size", "batch size of the validation pass (default: --batch-size)",
        resumable=True)
    steps_per_execution: int = option(
        1, "--steps-per-execution", "training steps per compiled call: more saves Python "
        "overhead per step (matters on fast GPUs), but signals and logs wait for the call",
        resumable=True)
    jit_compile: str = option(
        "auto", "--jit-compile", "compile each training and validation step with XLA: on, off, "
        "or auto (on where a GPU is visible, off on CPUs; docs/training.md)",
        choices=JIT_COMPILE, resumable=True)
    checkpoint_every: float = option(
        10.0, "--checkpoint-every", "minutes between mid-epoch resume states (0: only at the "
        "end of each epoch); a stop by Ctrl-C/SIGTERM always writes one", metavar="MINUTES",
        resumable=True)
    log_every: int = option(50, "--log-every", "steps between reads of the training metrics "
                            "(progress, non-finite check, TensorBoard)", resumable=True)
    seed: int = option(0, "--seed", "seeds the split, the data order, augmentation and "
                       "initialisation")
    early_stop: int | None = option(
        None, "--early-stop", "stop after N epochs in a row without a new best validation score "
        "(counted once the warm-up is over); default: train every epoch", metavar="N",
        resumable=True)

    def _problems(self) -> typing.Iterator[str]:
        name = self._name
        positive_ints = ("batch_size", "num_epochs", "steps_per_execution", "log_every")
        for field in positive_ints:
            value = getattr(self, field)
            if not (_is_int(value) and value >= 1):
                yield f"{name(field)} must be a positive integer, got {value!r}"
        for field in ("learning_rate_patience", "warmup_steps"):
            value = getattr(self, field)
            if not (_is_int(value) and value >= 0):
                yield f"{name(field)} must be a non-negative integer, got {value!r}"
        if not (_is_number(self.init_learning_rate) and self.init_learning_rate > 0):
            yield f"{name('init_learning_rate')} must be > 0, got {self.init_learning_rate!r}"
        if not (_is_number(self.momentum) and 0 <= self.momentum < 1):
            yield f"{name('momentum')} must be in [0, 1), got {self.momentum!r}"
        if not (_is_number(self.learning_rate_decay) and 0 < self.learning_rate_decay <= 1):
            yield (f"{name('learning_rate_decay')} must be in (0, 1], got "
                   f"{self.learning_rate_decay!r}")
        for field in ("eps", "score_threshold", "checkpoint_every"):
            value = getattr(self, field)
            if not (_is_number(value) and value >= 0):
                yield f"{name(field)} must be >= 0, got {value!r}"
        if self.clip_norm is not None and not (_is_number(self.clip_norm) and self.clip_norm > 0):
            yield f"{name('clip_norm')} must be > 0, got {self.clip_norm!r}"
        if self.ema_momentum is not None and not (_is_number(self.ema_momentum)
                                                  and 0 < self.ema_momentum < 1):
            yield f"{name('ema_momentum')} must be in (0, 1), got {self.ema_momentum!r}"
        if self.eval_batch_size is not None and not (_is_int(self.eval_batch_size)
                                                     and self.eval_batch_size >= 1):
            yield f"{name('eval_batch_size')} must be a positive integer, got " \
                  f"{self.eval_batch_size!r}"
        if self.jit_compile not in JIT_COMPILE:
            yield (f"{name('jit_compile')} must be one of {', '.join(JIT_COMPILE)}, got "
                   f"{self.jit_compile!r}")
        if self.schedule not in SCHEDULES:
            yield f"{name('schedule')} must be one of {', '.join(SCHEDULES)}, got " \
                  f"{self.schedule!r}"
        if not isinstance(self.nesterov, bool):
            yield f"{name('nesterov')} must be true or false, got {self.nesterov!r}"
        if not (_is_int(self.seed) and self.seed >= 0):
            yield f"{name('seed')} must be a non-negative integer, got {self.seed!r}"
        if self.early_stop is not None and not (_is_int(self.early_stop)
                                                and self.early_stop >= 1):
            yield f"{name('early_stop')} must be a positive integer, got {self.early_stop!r}"

    @property
    def plateau_decay(self) -> float:
        """The plateau rule's factor: 1 (it never decays) when an annealing schedule sets
        the rate."""
        return self.learning_rate_decay if self.schedule == "plateau" else 1.0

    @property
    def validation_batch_size(self) -> int:
        return self.eval_batch_size or self.batch_size


@dataclasses.dataclass(frozen=True)
class RunConfig(_Section):
    """Where the run lives and how it executes (nothing here changes what it computes, but
    the precision and the distribution, which change the numbers a little)."""

    save_dir: str | None = option(None, "--save-dir", "run folder (default: a new "
                                  "runs/gcn-<date>-<time>-<random>)", resumable=True)
    mixed_precision: str | None = option(
        None, "--mixed-precision", "compute in bf16 (bfloat16: recent CPUs, Ampere+ GPUs, TPUs) "
        "or fp16 (float16 with dynamic loss scaling: older GPUs); float32 weights and loss. "
        "The bare flag means bf16", choices=PRECISIONS, const="bf16")
    distribute: str = option(
        "auto", "--distribute", "none: one device; mirrored: data-parallel over all local "
        "GPUs; multiworker: several machines, configured by TF_CONFIG (docs/several-machines.md); "
        "auto: multiworker when TF_CONFIG names several workers, mirrored when "
        "several GPUs are visible, else none", choices=DISTRIBUTIONS)
    sync_bn: bool = option(False, "--sync-bn", "BatchNorm statistics over the global batch "
                           "across all replicas (for 1-2 images per GPU) instead of per replica")
    export: bool = option(False, "--export", "also export the best model: a TF SavedModel and "
                          "float32/float16 TFLite models, each checked against the Keras model "
                          "on a few validation images", resumable=True)
    quiet: bool = option(False, "--quiet", "log warnings only", resumable=True)

    def _problems(self) -> typing.Iterator[str]:
        if self.mixed_precision not in (None, *PRECISIONS):
            yield (f"{self._name('mixed_precision')} must be one of {', '.join(PRECISIONS)}, "
                   f"got {self.mixed_precision!r}")
        choices = _FIELDS[RunConfig]["distribute"].metadata["choices"]
        if self.distribute not in choices:
            yield (f"{self._name('distribute')} must be one of {', '.join(choices)}, got "
                   f"{self.distribute!r}")


_SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}
_FIELDS: dict[type, dict[str, dataclasses.Field]] = {
    section: {f.name: f for f in dataclasses.fields(section)} for section in _SECTIONS.values()}
# Field name -> its section's key; names are unique across sections (mapping by name).
_OWNER: dict[str, str] = {}
for _key, _section in _SECTIONS.items():
    for _field_name in _FIELDS[_section]:
        assert _field_name not in _OWNER, f"config field {_field_name} is declared twice"
        _OWNER[_field_name] = _key


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The whole configuration of a training run (see the module docstring)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "TrainConfig":
        """Fields by name from ``options`` (e.g. ``vars(args)`` of a parser whose options
        were declared by ``add_options``), defaults for the rest. Every bad value of every
        section is reported in one ConfigError."""
        values: dict[str, dict[str, Any]] = {key: {} for key in _SECTIONS}
        for name, value in options.items():
            if name not in _OWNER:
                raise ConfigError(f"unknown setting {name!r}")
            values[_OWNER[name]][name] = value
        sections, problems = {}, []
        for key, section in _SECTIONS.items():
            try:
                sections[key] = section(**values[key])
            except ConfigError as error:
                problems.append(str(error))
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**sections)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, source: str) -> "TrainConfig":
        """Rebuild from ``asdict`` output (config.json), checking names and types."""
        if not isinstance(document, Mapping) or set(document) != set(_SECTIONS):
            found = sorted(document) if isinstance(document, Mapping) else type(document).__name__
            raise ConfigError(f"{source}: expected the sections {', '.join(_SECTIONS)}, found "
                              f"{found}")
        return cls(**{key: section.from_dict(document[key], source=f"{source}: {key}")
                      for key, section in _SECTIONS.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, changes: Mapping[str, Any]) -> "TrainConfig":
        """A copy with fields changed by name (validated like a new config)."""
        by_section: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            if name not in _OWNER:
                raise ConfigError(f"unknown setting {name!r}")
            by_section.setdefault(_OWNER[name], {})[name] = value
        return TrainConfig(**{key: dataclasses.replace(getattr(self, key), **fields)
                              for key, fields in by_section.items()},
                           **{key: getattr(self, key) for key in _SECTIONS
                              if key not in by_section})

    @staticmethod
    def resume_changes(saved: "TrainConfig", options: Mapping[str, Any]) -> dict[str, Any]:
        """The options of a resume command line that may apply to the saved run.

        Raises ConfigError naming every option that would change what the run computes
        (those must be left out: the saved value is used)."""
        conflicts = []
        for name, value in options.items():
            field = _FIELDS[_SECTIONS[_OWNER[name]]][name]
            saved_value = getattr(getattr(saved, _OWNER[name]), name)
            if not field.metadata["resumable"] and value != saved_value:
                conflicts.append(f"{field.metadata['flag'] or name} (saved {saved_value!r}, "
                                 f"given {value!r})")
        if conflicts:
            allowed = [f.metadata["flag"] for fields in _FIELDS.values()
                       for f in fields.values() if f.metadata["resumable"] and f.metadata["flag"]]
            raise ConfigError(f"--resume continues the run with its saved settings, but "
                              f"{', '.join(conflicts)} differ; leave them out (only "
                              f"{', '.join(allowed)} may change)")
        return dict(options)


def add_options(parser_group: Any, section: type[_Section], *,
                types: Mapping[str, Any] | None = None) -> None:
    """Declare ``section``'s flagged fields on an argparse parser or group.

    No argparse default is set (``argparse.SUPPRESS``): the parsed namespace holds only the
    options the user gave, and the defaults stay in one place, the dataclass (shown in the
    help text). ``types`` overrides the parser of a field (e.g. ``image_size``).
    """
    import argparse

    hints = typing.get_type_hints(section)
    for field in dataclasses.fields(section):
        meta = field.metadata
        if not meta.get("flag"):
            continue
        default = field.default
        help_text = meta["help"] + ("" if default in (None, False) else
                                    f" (default: {_show(default)})")
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS,
                                  "help": help_text}
        hint = hints[field.name]
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        if hint is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = (types or {}).get(field.name) or (
                base[0] if base[0] in (int, float, str) else str)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            else:   # named after the flag (--lr LR), not after the field (init_learning_rate)
                kwargs["metavar"] = meta.get("metavar") or meta["flag"].lstrip("-").replace(
                    "-", "_").upper()
            if meta.get("const") is not None:
                kwargs["nargs"] = "?"
                kwargs["const"] = meta["const"]
        parser_group.add_argument(meta["flag"], **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


def resumable_fields(section: type[_Section]) -> tuple[str, ...]:
    """The fields of ``section`` that a resumed run may change (marked ``resumable``)."""
    return tuple(name for name, field in _FIELDS[section].items() if field.metadata["resumable"])


def flag_of(field_name: str) -> str:
    """The command-line flag of a config field (``"init_learning_rate"`` -> ``"--lr"``)."""
    section = _SECTIONS[_OWNER[field_name]]
    return _FIELDS[section][field_name].metadata["flag"]
