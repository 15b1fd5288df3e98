"""Train GCN on a folder in the pet layout (the tutorial's train.py, with a command line).

    python train.py --data data/catdog/train --save-dir runs/pets

1. Resolve the settings (learning/config.py: every option, its default and its check live in
   one dataclass field) and check them, the image size and the data folder before anything is
   written.
2. List the labelled images and split off a seeded validation share (--val-fraction).
3. Build GCN on ResNet50V2 with the backbone weights chosen by --pretrain.
4. Open the run folder (locked against a second live run) and load the images into memory
   (uint8, ~1 MB per 512x512 sample) or, with --stream, read them from disk every epoch.
5. Train with momentum SGD and the plateau learning-rate decay; after every epoch score the
   validation set (pixel accuracy selects the best model; mean IoU is logged too) and write
   the resume state, the best model, the history and the learning curve.

Ctrl-C or SIGTERM stops after the current step with a resume state;
`python train.py --resume --save-dir runs/pets` continues it (mid-epoch too) with its saved
settings. Every option and its default: `python train.py --help`.
"""
from __future__ import annotations

import argparse
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


def saved_config_text(save_dir: str) -> str:
    """The text of a run folder's config.json (for --resume)."""
    from learning.run_folder import RunFolder

    path = RunFolder(save_dir).file(RunFolder.CONFIG)
    if not path.is_file():
        raise ConfigError(f"cannot resume: {path} not found; is {save_dir} a run folder "
                          f"written by train.py?")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot resume: {path} cannot be read ({error})") from error


def resolve_config(options: dict[str, Any], resume: bool, saved_text: str | None = None
                   ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The settings of this run and, when it resumes, the saved config.json document: the
    command line, or for --resume the saved settings (``saved_text``) with the resumable
    options of the command line applied."""
    if not resume:
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    options, resume = parse_options(argv)
    if resume and options.get("save_dir") is None:
        raise ConfigError("--resume needs --save-dir <the run folder to continue>")
    from learning.cluster import broadcast_bytes, cluster_from_environment, make_strategy

    cluster = cluster_from_environment()
    saved = None
    if not resume:
        config, _ = resolve_config(options, resume)  # every option checked before anything
        if cluster.distributed and config.run.distribute in ("auto", "multiworker") \
                and not config.run.save_dir:
            raise ConfigError("multi-worker training needs --save-dir (the same path on every "
                              "worker; only the chief writes there)")
    quiet_tensorflow()
    setup_logging(verbose=not options.get("quiet", False))
    buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    logging.getLogger().addHandler(buffer)
    # Heavy imports after argument parsing, so --help and usage errors are instant. The
    # strategy comes first: MultiWorkerMirroredStrategy must exist before TensorFlow runs.
    if resume:
        if cluster.distributed:
            # The chief's saved settings reach the others by a collective (their --save-dir
            # need not be shared): the cluster is formed before the settings are known.
            strategy, cluster = make_strategy("multiworker")
            text = saved_config_text(options["save_dir"]) if cluster.is_chief else None
            config, saved = resolve_config(options, resume, broadcast_bytes(
                strategy, text.encode("utf-8") if text else None, cluster.is_chief).decode())
        else:
            config, saved = resolve_config(options, resume,
                                           saved_config_text(options["save_dir"]))
            strategy, cluster = make_strategy(config.run.distribute)
    else:
        strategy, cluster = make_strategy(config.run.distribute)
    import keras
    import numpy as np
    import tensorflow as tf

    from datasets.augment import random_flip_scale_crop
    from datasets.check import TRAIN_SAMPLE, check_examples
    from datasets.classes import parse_class_weights, resolve_class_names
    from datasets.data import DataSet
    from datasets.examples import list_examples
    from datasets.label_format import resolve_label_format
    from datasets.labels import LabelFormat
    from datasets.loading import load_examples
    from datasets.pipeline import ArrayEpochs, make_tf_dataset
    from datasets.split import seeded_split
    from datasets.statistics import class_weights_from_labels
    from datasets.validation import iter_labels
    from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
    from learning.optimizers import MomentumOptimizer
    from learning.precision import POLICIES, emulated_bfloat16_warning
    from learning.run_folder import RunFolder, RunFolderError, default_run_name
    from learning.run_info import LABELS_KEY, labels_entry
    from models.export import DEFAULT_NUM_CHECK_IMAGES, export_model
    from models.nn import GCN, SegNet, validate_input_shape

    data, optim = config.data, config.optim
    if config.run.save_dir and not resume and cluster.is_chief \
            and RunFolder(config.run.save_dir).holds_run():
        # Checked again under the folder's lock; here so that it is the first thing said.
        raise RunFolderError(
            f"{config.run.save_dir} already holds a run ({RunFolder.STATE}): continue it with "
            f"--resume --save-dir {config.run.save_dir}, or choose another --save-dir")
    slow = emulated_bfloat16_warning(config.run.mixed_precision,
                                     len(tf.config.list_physical_devices("GPU")))
    if slow:   # said before the data is read, which can take minutes
        logger.warning("%s", slow)
    height, width = data.image_size
    validate_input_shape((height, width, 3))  # fail before loading any data
    examples = list_examples(data.data, label_format=data.label_format)
    saved_labels = (saved or {}).get(LABELS_KEY)
    if isinstance(saved_labels, dict):   # a resumed run reads its masks as it did
        label_format = LabelFormat.from_dict(
            saved_labels.get("label_format"),
            source=f"{config.run.save_dir}/{RunFolder.CONFIG}: {LABELS_KEY}")
    else:
        label_format = resolve_label_format(
            examples, data.label_format, classes=config.model.class_names,
            num_classes=config.model.num_classes, palette=data.palette, data_dir=data.data,
            max_pixels=data.pixel_limit)
    config = config.replace({"num_classes": label_format.num_classes})
    train_examples, val_examples = seeded_split(examples, data.val_fraction, optim.seed,
                                                max_items=data.max_images, key=lambda e: e.name)
    if len(train_examples) < optim.batch_size:
        raise ConfigError(f"{len(train_examples)} training images are fewer than "
                          f"--batch-size {optim.batch_size}; lower --batch-size or add images")
    split = {"train": [e.name for e in train_examples], "val": [e.name for e in val_examples]}
    data_check = check_examples(train_examples, label_format, image_size=(height, width),
                                sample=TRAIN_SAMPLE, max_pixels=data.pixel_limit,
                                where=f"{data.data} (training split)",
                                decided=f"--label-format {data.label_format}", strict=True)
    for line in data_check.lines(short=True):
        logger.info("%s", line)
    for warning in data_check.warnings():
        logger.warning("DATA CHECK: %s (details: python -m datasets.check %s)", warning,
                       data.data)
    if resume:   # the model as it was built: its names and weights (None for older runs)
        class_names = saved.get("model", {}).get("class_names")
        class_weights = saved.get("model", {}).get("class_weights")
    else:
        # Default names stay out of the model config, which is then the one saved before names
        # existed (SegNet.load gives the same names back); the run's config.json has them all.
        class_names = (None if label_format.class_names == resolve_class_names(
            None, label_format.num_classes) else label_format.class_names)
        class_weights = parse_class_weights(config.model.class_weights, config.model.num_classes)
        if class_weights == "auto":   # median frequency over every training label, streamed
            class_weights = class_weights_from_labels(
                iter_labels(train_examples, (height, width), label_format=label_format,
                            max_pixels=data.pixel_limit), config.model.num_classes)

    if config.run.mixed_precision:
        keras.mixed_precision.set_global_policy(POLICIES[config.run.mixed_precision])
    keras.utils.set_random_seed(optim.seed)  # weight initialisation
    with strategy.scope():
        model = GCN(input_shape=(height, width, 3), num_classes=config.model.num_classes,
                    kernel_size=config.model.kernel_size, pretrain=config.model.pretrain,
                    pretrained_dir=config.model.pretrained_dir,
                    weight_decay=config.model.weight_decay, bn_momentum=config.model.bn_momentum,
                    sync_bn=config.run.sync_bn, class_names=class_names,
                    class_weights=class_weights)
    if not model.pretrain_report.pretrained:
        logger.warning("the backbone is randomly initialised (--pretrain none): training starts "
                       "from scratch and needs many more epochs than fine-tuning")

    save_dir = Path(config.run.save_dir) if config.run.save_dir else default_run_name()
    config = config.replace({"save_dir": str(save_dir)})
    folder = RunFolder(save_dir, is_chief=cluster.is_chief).open(resume=resume)
    try:
        if cluster.is_chief:
            _log_to_file(folder.file(RunFolder.LOG), buffer)
        if resume and cluster.is_chief:
            saved_split = folder.read_json(RunFolder.SPLIT)
            if saved_split != split:
                raise ConfigError(
                    f"the images in {data.data} no longer give the split saved in "
                    f"{folder.file(RunFolder.SPLIT)}: resume needs the same data")
        folder.write_json(RunFolder.SPLIT, split)
        folder.write_json(RunFolder.CONFIG, {
            "config": config.to_dict(),
            "model": model.get_config(),
            "pretrain_report": model.pretrain_report.summary(),
            "num_train": len(train_examples),
            "num_val": len(val_examples),
            "replicas": strategy.num_replicas_in_sync,
            "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
            "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                         "keras": keras.__version__},
            "command": " ".join([os.path.basename(sys.executable), "train.py", *argv]),
            LABELS_KEY: labels_entry(label_format, class_weights=model.class_weights,
                                     data_check=data_check.to_dict()),
        })

        augment = random_flip_scale_crop if data.augment else None
        # Each worker reads only its share: the streaming path its chunk of every global batch
        # (shard), the in-memory path every num_workers-th image; validation likewise, and the
        # workers add up their scores.
        worker, workers = cluster.worker_index, cluster.num_workers
        val_share = val_examples[worker::workers]
        if data.stream:
            def train_set(epoch: int, *, batch_size: int, skip_batches: int,
                          shard: tuple[int, int]) -> tf.data.Dataset:
                return make_tf_dataset(train_examples, (height, width), shuffle_seed=optim.seed,
                                       epoch=epoch, augment=augment,
                                       max_pixels=data.pixel_limit, label_format=label_format,
                                       batch_size=batch_size, shard=shard,
                                       skip_batches=skip_batches)
            val_set = (make_tf_dataset(val_share, (height, width), max_pixels=data.pixel_limit,
                                       label_format=label_format) if val_share else None)
        else:
            share = train_examples[worker::workers]
            images, labels, _ = load_examples(share, (height, width), where="train split",
                                              max_pixels=data.pixel_limit,
                                              label_format=label_format)
            if cluster.distributed:
                # Stateless per-epoch order: every worker resumes at the same (epoch, step).
                train_set = ArrayEpochs(images, labels, seed=optim.seed, stream=worker,
                                        augment=augment,
                                        length=len(train_examples) // workers)
            else:
                train_set = DataSet(images, labels, seed=optim.seed, augment=augment)
            val_set = None
            if val_share:
                images, labels, _ = load_examples(val_share, (height, width), where="val split",
                                                  max_pixels=data.pixel_limit,
                                                  label_format=label_format)
                val_set = DataSet(images, labels)
            elif val_examples:       # fewer validation images than workers: this one has none
                val_set = DataSet(np.zeros((0, height, width, 3), np.uint8),
                                  np.zeros((0, height, width), np.uint8))

        optimizer = MomentumOptimizer.from_config(
            model, train_set, AccuracyEvaluator(ignore_label=model.ignore_label), val_set, optim,
            extra_evaluators=[MeanIoUEvaluator(config.model.num_classes,
                                               ignore_label=model.ignore_label)],
            strategy=strategy)
        results = optimizer.train(folder, details=True, verbose=not config.run.quiet,
                                  resume=resume)
    finally:
        folder.close()

    if not cluster.is_chief:
        print(f"Worker {cluster.worker_index} of {cluster.num_workers} done; the chief wrote "
              f"the run folder")
        return 0
    best_epoch = results["best_epoch"]
    if best_epoch is None:
        print(f"No epoch improved on the worst score: no best model in {save_dir}")
        return EXIT_NO_RESULT
    if config.run.export:   # SavedModel + TFLite, checked on a few validation images
        check_images, _, _ = load_examples((val_examples or train_examples)[
            :DEFAULT_NUM_CHECK_IMAGES], (height, width), no_label=True,
            where="export check images", max_pixels=data.pixel_limit)
        report = export_model(SegNet.load(save_dir), save_dir, check_images=check_images)
        for line in report.lines():
            print(line)
    row = results["epochs"][best_epoch - 1]
    which = "validation" if val_examples else "training"
    miou = row.get("eval_mean_iou")
    print(f"Best {which} pixel accuracy {results['best_score']:.4f} at epoch {best_epoch}"
          + (f" (mean IoU {miou:.4f})" if miou is not None else ""))
    width_ = max(len(what) for what, _ in RunFolder.LAYOUT) + 2
    print(f"Run folder {save_dir}/:\n" + "\n".join(
        f"  {what.ljust(width_)}{files}" for what, files in RunFolder.LAYOUT))
    print(f"Continue or extend it: python train.py --resume --save-dir {save_dir} [--epochs N]")
    print(f"Next: python test.py --data <test folder> --model {save_dir}")
    return 0




if __name__ == "__main__":
    run(main)
