"""Train GCN on a folder in the pet layout (the tutorial's train.py, with a command line).

    python train.py --data data/catdog/train --save-dir runs/pets

``main`` reads as the five steps it takes:

1. ``read_settings``: every option checked (learning/config.py: each option's default and check
   live in one dataclass field), or for --resume the run folder's saved settings; the
   distribution strategy.
2. ``read_training_data``: list the labelled images, decide how the masks read, split off a
   seeded validation share (--val-fraction), check the training split, class weights.
3. ``build_model``: GCN on ResNet50V2 with the backbone weights chosen by --pretrain.
4. ``train``: open the run folder (locked against a second live run), record the settings,
   read the images (datasets/sources.py: into memory, or streamed with --stream) and train with
   momentum SGD and the plateau decay; after every epoch score the validation set (pixel
   accuracy selects the best model; mean IoU is logged too) and write the resume state, the
   best model, the history and the learning curve.
5. ``report``: the best score, the export (--export), where everything is.

Ctrl-C or SIGTERM at any moment ends with one line and the exit code 130/143; during training
the run stops after the current step with a resume state. `python train.py --resume --save-dir
runs/pets` continues it (mid-epoch too) with its saved settings, starts it again if it stopped
before its first resume state, and starts a new run in an empty or missing folder: one command
serves every restart of a preemptible job. Every option and its default: `python train.py
--help`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import logging.handlers
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

from common.cli import (HelpFormatter, add_debug_flag, quiet_tensorflow, run, setup_logging,
                        size_argument)
from common.errors import EXIT_NO_RESULT, ConfigError
from learning.config import (DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig,
                             add_options)

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train GCN (ResNet-v2-50 backbone) for background/cat/dog segmentation.",
        formatter_class=HelpFormatter)
    add_options(parser.add_argument_group("data"), DataConfig,
                types={"image_size": size_argument})
    add_options(parser.add_argument_group("model"), ModelConfig)
    add_options(parser.add_argument_group("optimisation"), OptimConfig)
    runs = parser.add_argument_group("run")
    add_options(runs, RunConfig)
    runs.add_argument("--resume", action="store_true", default=argparse.SUPPRESS,
                      help="continue the run in --save-dir with its saved settings (only the "
                           "options marked resumable in docs/options.md may change)")
    add_debug_flag(runs)
    return parser


def parse_options(argv: Sequence[str]) -> tuple[dict[str, Any], bool]:
    """The options given on the command line (no defaults: those live in learning/config.py)
    and whether the run resumes."""
    options = vars(build_parser().parse_args(argv))
    resume = bool(options.pop("resume", False))
    options.pop("debug", None)                          # common.cli.run handles it
    return options, resume


def resume_plan(save_dir: str) -> tuple[str, str | None]:
    """What ``--resume --save-dir`` finds: ("resume", the saved config.json text) for a run with
    a resume state, ("restart", that text) for a run stopped before its first one, ("new",
    None) for an empty or missing folder. So one command serves every restart of a job."""
    from learning.run_folder import RunFolder

    folder = RunFolder(save_dir)
    path = folder.file(RunFolder.CONFIG)
    if not folder.holds_run() and not path.is_file():
        return "new", None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot resume: {path} cannot be read ({error})") from error
    return ("resume" if folder.holds_run() else "restart"), text


def resolve_config(options: dict[str, Any], saved_text: str | None = None
                   ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The settings of this run and the saved config.json document: the command line, or with
    ``saved_text`` (a run to continue) the saved settings with the resumable options of the
    command line applied."""
    if saved_text is None:
        return TrainConfig.from_options(options), None
    source = str(Path(options["save_dir"]) / "config.json")
    try:
        document = json.loads(saved_text)
    except ValueError as error:
        raise ConfigError(f"{source} is not valid JSON ({error}); restore it from a backup, "
                          f"or start a new run") from None
    if not isinstance(document, dict) or "config" not in document:
        raise ConfigError(f"{source} has no 'config' section: it was not written by this "
                          f"version of train.py, so the run cannot be resumed")
    saved = TrainConfig.from_dict(document["config"], source=source)
    return saved.replace(TrainConfig.resume_changes(saved, options)), document


def _log_to_file(path: Path, buffer: logging.handlers.MemoryHandler) -> None:
    """From now on log into the run's train.log too, starting with what was logged before
    the folder existed (held in ``buffer``)."""
    root = logging.getLogger()
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    buffer.setTarget(to_file)
    buffer.flush()
    root.removeHandler(buffer)
    root.addHandler(to_file)


@dataclasses.dataclass
class Settings:
    """What the command line (and, for --resume, the run folder) decided."""

    config: TrainConfig
    resume: bool                      # continue the folder's resume state
    saved: dict[str, Any] | None      # the saved config.json of a run continued or restarted
    strategy: Any
    cluster: Any
    argv: list[str]
    log_buffer: logging.handlers.MemoryHandler


@dataclasses.dataclass
class TrainingData:
    """The labelled images of the run, split, checked, and how their masks read."""

    label_format: Any
    train: list[Any]
    val: list[Any]
    check: Any                        # datasets.check's report on the training split
    class_names: tuple[str, ...] | None
    class_weights: Any

    @property
    def split(self) -> dict[str, list[str]]:
        return {"train": [e.name for e in self.train], "val": [e.name for e in self.val]}


def read_settings(argv: list[str]) -> Settings:
    """Options -> the run's settings and its distribution strategy (before any data is read).
    The strategy comes first: MultiWorkerMirroredStrategy must exist before TensorFlow runs,
    and under it the chief's saved settings reach the other workers by a collective."""
    options, resume = parse_options(argv)
    if resume and options.get("save_dir") is None:
        raise ConfigError("--resume needs --save-dir <the run folder to continue>")
    from learning.cluster import broadcast_bytes, cluster_from_environment, make_strategy

    cluster = cluster_from_environment()
    if not resume:
        config, _ = resolve_config(options)   # every option checked before anything
        if cluster.distributed and config.run.distribute in ("auto", "multiworker") \
                and not config.run.save_dir:
            raise ConfigError("multi-worker training needs --save-dir (the same path on every "
                              "worker; only the chief writes there)")
    quiet_tensorflow()
    setup_logging(verbose=not options.get("quiet", False))
    buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    logging.getLogger().addHandler(buffer)
    if not resume:
        strategy, cluster = make_strategy(config.run.distribute)
        return Settings(config, False, None, strategy, cluster, argv, buffer)
    save_dir = options["save_dir"]
    if cluster.distributed:
        strategy, cluster = make_strategy("multiworker")
        plan = json.dumps(resume_plan(save_dir)) if cluster.is_chief else None
        mode, text = json.loads(broadcast_bytes(
            strategy, plan.encode("utf-8") if plan else None, cluster.is_chief).decode())
    else:
        mode, text = resume_plan(save_dir)
        strategy = None
    config, saved = resolve_config(options, text)
    if mode == "restart":
        logger.info("%s holds no resume state (the run stopped before its first one): "
                    "starting it again with its saved settings", save_dir)
    elif mode == "new":
        logger.info("nothing to resume in %s: starting a new run there", save_dir)
    if strategy is None:
        strategy, cluster = make_strategy(config.run.distribute)
    return Settings(config, mode == "resume", saved, strategy, cluster, argv, buffer)


def read_training_data(settings: Settings) -> TrainingData:
    """List the labelled images, decide how their masks read, split off the validation share,
    check the training split and resolve the class names and loss weights."""
    import tensorflow as tf

    from datasets.check import TRAIN_SAMPLE, check_examples
    from datasets.classes import parse_class_weights, resolve_class_names
    from datasets.examples import list_examples
    from datasets.label_format import resolve_label_format
    from datasets.labels import LabelFormat
    from datasets.split import seeded_split
    from datasets.statistics import class_weights_from_labels
    from datasets.validation import iter_labels
    from learning.precision import emulated_bfloat16_warning
    from learning.run_folder import RunFolder, RunFolderError
    from learning.run_info import LABELS_KEY
    from models.nn import validate_input_shape

    config = settings.config
    data, optim = config.data, config.optim
    if config.run.save_dir and not settings.resume and not settings.saved \
            and settings.cluster.is_chief and RunFolder(config.run.save_dir).holds_run():
        # Checked again under the folder's lock; here so that it is the first thing said.
        raise RunFolderError(
            f"{config.run.save_dir} already holds a run ({RunFolder.STATE}): continue it with "
            f"--resume --save-dir {config.run.save_dir}, or choose another --save-dir")
    slow = emulated_bfloat16_warning(config.run.mixed_precision,
                                     len(tf.config.list_physical_devices("GPU")))
    if slow:   # said before the data is read, which can take minutes
        logger.warning("%s", slow)
    validate_input_shape((*data.image_size, 3))  # fail before loading any data
    examples = list_examples(data.data, label_format=data.label_format)
    saved_labels = (settings.saved or {}).get(LABELS_KEY)
    if isinstance(saved_labels, dict):   # a continued run reads its masks as it did
        label_format = LabelFormat.from_dict(
            saved_labels.get("label_format"),
            source=f"{config.run.save_dir}/{RunFolder.CONFIG}: {LABELS_KEY}")
    else:
        label_format = resolve_label_format(
            examples, data.label_format, classes=config.model.class_names,
            num_classes=config.model.num_classes, palette=data.palette, data_dir=data.data,
            max_pixels=data.pixel_limit)
    settings.config = config = config.replace({"num_classes": label_format.num_classes})
    train, val = seeded_split(examples, data.val_fraction, optim.seed,
                              max_items=data.max_images, key=lambda e: e.name)
    if len(train) < optim.batch_size:
        raise ConfigError(f"{len(train)} training images are fewer than --batch-size "
                          f"{optim.batch_size}; lower --batch-size or add images")
    check = check_examples(train, label_format, image_size=data.image_size, sample=TRAIN_SAMPLE,
                           max_pixels=data.pixel_limit, where=f"{data.data} (training split)",
                           decided=f"--label-format {data.label_format}", strict=True)
    for line in check.lines(short=True):
        logger.info("%s", line)
    for warning in check.warnings():
        logger.warning("DATA CHECK: %s (details: python -m datasets.check %s)", warning,
                       data.data)
    if settings.saved:   # the model as it was built: its names and weights (None: older runs)
        class_names = settings.saved.get("model", {}).get("class_names")
        class_weights = settings.saved.get("model", {}).get("class_weights")
    else:
        # Default names stay out of the model config, which is then the one saved before names
        # existed (SegNet.load gives the same names back); the run's config.json has them all.
        class_names = (None if label_format.class_names == resolve_class_names(
            None, label_format.num_classes) else label_format.class_names)
        class_weights = parse_class_weights(config.model.class_weights, config.model.num_classes)
        if class_weights == "auto":   # median frequency over every training label, streamed
            class_weights = class_weights_from_labels(
                iter_labels(train, data.image_size, label_format=label_format,
                            max_pixels=data.pixel_limit), config.model.num_classes)
    return TrainingData(label_format, train, val, check, class_names, class_weights)


def build_model(settings: Settings, data: TrainingData) -> Any:
    """GCN on ResNet50V2, in the strategy's scope, with the run's precision and seed."""
    import keras

    from learning.precision import POLICIES
    from models.nn import GCN

    config = settings.config
    if config.run.mixed_precision:
        keras.mixed_precision.set_global_policy(POLICIES[config.run.mixed_precision])
    keras.utils.set_random_seed(config.optim.seed)  # weight initialisation
    with settings.strategy.scope():
        model = GCN(input_shape=(*config.data.image_size, 3),
                    num_classes=config.model.num_classes, kernel_size=config.model.kernel_size,
                    pretrain=config.model.pretrain, pretrained_dir=config.model.pretrained_dir,
                    weight_decay=config.model.weight_decay, bn_momentum=config.model.bn_momentum,
                    sync_bn=config.run.sync_bn, class_names=data.class_names,
                    class_weights=data.class_weights)
    if not model.pretrain_report.pretrained:
        logger.warning("the backbone is randomly initialised (--pretrain none): training starts "
                       "from scratch and needs many more epochs than fine-tuning")
    return model


def write_run_settings(folder: Any, settings: Settings, data: TrainingData, model: Any) -> None:
    """split.json and config.json: what the run trains on and with which settings."""
    import keras
    import tensorflow as tf

    from learning.run_folder import RunFolder
    from learning.run_info import LABELS_KEY, labels_entry

    config = settings.config
    if settings.resume and settings.cluster.is_chief and \
            folder.read_json(RunFolder.SPLIT) != data.split:
        raise ConfigError(f"the images in {config.data.data} no longer give the split saved in "
                          f"{folder.file(RunFolder.SPLIT)}: resume needs the same data")
    folder.write_json(RunFolder.SPLIT, data.split)
    folder.write_json(RunFolder.CONFIG, {
        "config": config.to_dict(),
        "model": model.get_config(),
        "pretrain_report": model.pretrain_report.summary(),
        "num_train": len(data.train),
        "num_val": len(data.val),
        "replicas": settings.strategy.num_replicas_in_sync,
        "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "command": " ".join([os.path.basename(sys.executable), "train.py", *settings.argv]),
        LABELS_KEY: labels_entry(data.label_format, class_weights=model.class_weights,
                                 data_check=data.check.to_dict()),
    })


def train(settings: Settings, data: TrainingData, model: Any, stop: Any) -> dict[str, Any]:
    """Open the run folder, record the settings, read the images and run the training loop."""
    from datasets.augment import random_flip_scale_crop
    from datasets.sources import training_sources
    from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
    from learning.optimizers import MomentumOptimizer
    from learning.run_folder import RunFolder

    config, cluster = settings.config, settings.cluster
    folder = RunFolder(config.run.save_dir, is_chief=cluster.is_chief).open(
        resume=settings.resume)
    try:
        if cluster.is_chief:
            _log_to_file(folder.file(RunFolder.LOG), settings.log_buffer)
        write_run_settings(folder, settings, data, model)
        stop.phase = "reading the training images"
        train_set, val_set = training_sources(
            data.train, data.val, config.data.image_size, stream=config.data.stream,
            augment=random_flip_scale_crop if config.data.augment else None,
            seed=config.optim.seed, shard=(cluster.worker_index, cluster.num_workers),
            label_format=data.label_format,
            max_pixels=config.data.pixel_limit)
        stop.phase = "preparing the training loop"
        optimizer = MomentumOptimizer.from_config(
            model, train_set, AccuracyEvaluator(ignore_label=model.ignore_label), val_set,
            config.optim, strategy=settings.strategy,
            extra_evaluators=[MeanIoUEvaluator(config.model.num_classes,
                                               ignore_label=model.ignore_label)])
        return optimizer.train(folder, details=True, verbose=not config.run.quiet,
                               resume=settings.resume)
    finally:
        folder.close()


def report(settings: Settings, data: TrainingData, results: dict[str, Any]) -> int:
    """The export (--export), the best score and where everything is."""
    from datasets.loading import load_examples
    from learning.run_folder import RunFolder
    from models.export import DEFAULT_NUM_CHECK_IMAGES, export_model
    from models.nn import SegNet

    config, cluster = settings.config, settings.cluster
    save_dir = config.run.save_dir
    if not cluster.is_chief:
        print(f"Worker {cluster.worker_index} of {cluster.num_workers} done; the chief wrote "
              f"the run folder")
        return 0
    best_epoch = results["best_epoch"]
    if best_epoch is None:
        print(f"No epoch improved on the worst score: no best model in {save_dir}")
        return EXIT_NO_RESULT
    if config.run.export:   # SavedModel + TFLite, checked on a few validation images
        check_images, _, _ = load_examples(
            (data.val or data.train)[:DEFAULT_NUM_CHECK_IMAGES], config.data.image_size,
            no_label=True, where="export check images", max_pixels=config.data.pixel_limit)
        for line in export_model(SegNet.load(save_dir), save_dir,
                                 check_images=check_images).lines():
            print(line)
    row = results["epochs"][best_epoch - 1]
    which = "validation" if data.val else "training"
    miou = row.get("eval_mean_iou")
    print(f"Best {which} pixel accuracy {results['best_score']:.4f} at epoch {best_epoch}"
          + (f" (mean IoU {miou:.4f})" if miou is not None else ""))
    width = max(len(what) for what, _ in RunFolder.LAYOUT) + 2
    print(f"Run folder {save_dir}/:\n" + "\n".join(
        f"  {what.ljust(width)}{files}" for what, files in RunFolder.LAYOUT))
    print(f"Continue or extend it: python train.py --resume --save-dir {save_dir} [--epochs N]")
    print(f"Next: python test.py --data <test folder> --model {save_dir}")
    return 0


def what_was_kept(save_dir: str | None) -> str:
    """For a stop before the training loop: what the run folder holds and how to go on."""
    from learning.run_folder import RunFolder

    if save_dir and RunFolder(save_dir).holds_run():
        return (f"the run in {save_dir} is as its last resume state left it; continue with: "
                f"python train.py --resume --save-dir {save_dir}")
    again = (f" (python train.py --resume --save-dir {save_dir} starts it again with its "
             f"settings)" if save_dir else "")
    return f"no resume state was written yet: run the same command again{again}"


def main(argv: Sequence[str] | None = None) -> int:
    """settings -> data -> model -> run folder and training -> report. SIGINT/SIGTERM at any
    point ends with one line and the signal's exit code (the loop saves a resume state)."""
    from learning.signals import StopSignals, TrainingInterrupted

    argv = sys.argv[1:] if argv is None else list(argv)
    settings: Settings | None = None
    with StopSignals(immediate=True) as stop:
        try:
            stop.phase = "reading the settings"
            settings = read_settings(argv)
            if not settings.config.run.save_dir:
                from learning.run_folder import default_run_name

                settings.config = settings.config.replace(
                    {"save_dir": str(default_run_name())})
            stop.phase = "reading the data"
            data = read_training_data(settings)
            stop.phase = "building the model"
            model = build_model(settings, data)
            stop.phase = "opening the run folder"
            results = train(settings, data, model, stop)
            stop.phase = "writing the report"
            return report(settings, data, results)
        except TrainingInterrupted as error:
            if error.phase is None:        # the training loop's own stop: it says what it kept
                raise
            save_dir = settings.config.run.save_dir if settings is not None else None
            raise TrainingInterrupted(f"{error}; {what_was_kept(save_dir)}",
                                      exit_code=error.exit_code) from None


if __name__ == "__main__":
    run(main)
