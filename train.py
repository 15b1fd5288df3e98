"""Train GCN on a folder in the pet layout (the tutorial's train.py, with a command line).

    python train.py --data data/catdog/train --save-dir runs/pets

1. List the labelled images and split off a seeded validation share (--val-fraction).
2. Load both parts into memory (uint8, ~1 MB per 512x512 sample) or, with --stream, read them
   from disk every epoch through tf.data.
3. Build GCN on ResNet50V2 with the backbone weights chosen by --pretrain.
4. Train with momentum SGD and the plateau learning-rate decay; after every epoch score the
   validation set (pixel accuracy selects the best model; mean IoU is logged too), save the
   best model, the resume state, the history and the learning curve into the run folder.

`python train.py --resume --save-dir runs/pets` continues an interrupted run with its saved
settings (only --epochs may change). Every option and its default: `python train.py --help`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from common.cli import HelpFormatter, quiet_tensorflow, run, setup_logging

logger = logging.getLogger("train")

CONFIG_NAME = "config.json"
SPLIT_NAME = "split.json"
# Options that may differ when a run is resumed (everything else must match the saved config).
RESUMABLE_CHANGES = ("epochs", "quiet", "resume", "save_dir", "export")


def image_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '384x512' -> (384, 512) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sides, got {text!r}")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train GCN (ResNet-v2-50 backbone) for background/cat/dog segmentation.",
        formatter_class=HelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data", default="data/catdog/train",
                      help="labelled folder with images/ and masks/ (the pet layout)")
    data.add_argument("--image-size", type=image_size, default=(512, 512), metavar="N|HxW",
                      help="training size: images are cropped/padded (never resized) to it; "
                           "sides must be multiples of 32")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of the images held out for validation (seeded random split)")
    data.add_argument("--max-images", type=int, default=None,
                      help="use only this many images (a seeded random subset), for quick runs")
    data.add_argument("--augment", action="store_true",
                      help="random horizontal flip and scale-and-crop of training images "
                           "(masks resized nearest)")
    data.add_argument("--stream", action="store_true",
                      help="read images from disk every epoch (tf.data) instead of loading "
                           "them all into memory")
    model = parser.add_argument_group("model")
    model.add_argument("--num-classes", type=int, default=3,
                       help="output classes (background, cat, dog)")
    model.add_argument("--pretrain", default="auto",
                       help="backbone weights: auto (a file in --pretrained-dir, else imagenet), "
                            "imagenet, none (random init), or a weights/checkpoint path")
    model.add_argument("--pretrained-dir", default="pretrained_models",
                       help="where --pretrain auto looks for weights files")
    model.add_argument("--weight-decay", type=float, default=1e-4,
                       help="L2 weight decay on convolution kernels (wd * sum(w^2) / 2)")
    model.add_argument("--bn-momentum", type=float, default=None,
                       help="BatchNorm moving-average momentum (default: Keras' 0.99); 0.9 "
                            "lets a from-scratch run's statistics catch up faster")
    model.add_argument("--kernel-size", type=int, default=None,
                       help="GCN kernel (default: image side / 32 - 1)")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, default=8, help="global batch size")
    optim.add_argument("--epochs", type=int, default=300, help="number of epochs")
    optim.add_argument("--lr", type=float, default=1e-3, help="initial learning rate")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    optim.add_argument("--warmup-steps", type=int, default=0,
                       help="raise the learning rate linearly from 0 over this many steps")
    optim.add_argument("--clip-norm", type=float, default=None,
                       help="clip gradients to this global norm (1.0 helps from scratch)")
    optim.add_argument("--ema-momentum", type=float, default=None,
                       help="evaluate and save an exponential moving average of the weights "
                            "with this momentum (e.g. 0.99) instead of the noisy raw weights")
    optim.add_argument("--patience", type=int, default=10,
                       help="epochs without improvement tolerated before the lr decays")
    optim.add_argument("--decay", type=float, default=0.1, help="lr factor on a plateau")
    optim.add_argument("--eps", type=float, default=1e-8,
                       help="an lr decay smaller than this is skipped")
    optim.add_argument("--score-threshold", type=float, default=1e-4,
                       help="relative improvement that counts as a new best")
    optim.add_argument("--eval-batch-size", type=int, default=None,
                       help="batch size of the validation pass (default: --batch-size)")
    runs = parser.add_argument_group("run")
    runs.add_argument("--save-dir", default=None,
                      help="run folder (default: runs/gcn-<date>-<time>)")
    runs.add_argument("--resume", action="store_true",
                      help="continue the interrupted run in --save-dir with its saved settings")
    runs.add_argument("--seed", type=int, default=0,
                      help="seeds the split, the data order, augmentation and initialisation")
    runs.add_argument("--mixed-precision", action="store_true",
                      help="compute in bfloat16 (float32 weights and loss); ~1.6x faster on "
                           "recent CPUs, for GPUs/TPUs that support bfloat16")
    runs.add_argument("--distribute", choices=("none", "mirrored"), default="none",
                      help="mirrored: data-parallel over all local GPUs (tf.distribute)")
    runs.add_argument("--export", action="store_true",
                      help="also export the best model as a TF SavedModel for serving")
    runs.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The options given on the command line (not defaults): a copy of the parser whose
    defaults are all SUPPRESS parses the same argv."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # argparse has no public way to clone a parser
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = action.type
            probe.add_argument(*action.option_strings, **kwargs)
    return vars(probe.parse_known_args(argv)[0])


def check_options(args: argparse.Namespace) -> None:
    """Range checks with the option's name in the message (argparse checks only types)."""
    checks = [
        (0.0 <= args.val_fraction < 1.0, "--val-fraction must be in [0, 1)"),
        (args.max_images is None or args.max_images >= 2, "--max-images must be at least 2"),
        (args.num_classes >= 2, "--num-classes must be at least 2"),
        (args.batch_size >= 1, "--batch-size must be >= 1"),
        (args.epochs >= 1, "--epochs must be >= 1"),
        (args.lr > 0, "--lr must be > 0"),
        (args.warmup_steps >= 0, "--warmup-steps must be >= 0"),
        (args.clip_norm is None or args.clip_norm > 0, "--clip-norm must be > 0"),
        (args.ema_momentum is None or 0 < args.ema_momentum < 1,
         "--ema-momentum must be in (0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def resolve_run(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """The settings of this run: the command line, or for --resume the saved config.json with
    only --epochs (and output options) taken from the command line."""
    args = parser.parse_args(argv)
    if not args.resume:
        args.save_dir = args.save_dir or time.strftime("runs/gcn-%Y%m%d-%H%M%S")
        existing = [name for name in ("last_state.npz", "best_model.keras", CONFIG_NAME)
                    if (Path(args.save_dir) / name).exists()]
        if existing:
            raise FileExistsError(
                f"{args.save_dir} already holds a run ({', '.join(existing)}): continue it with "
                f"--resume --save-dir {args.save_dir}, or choose another --save-dir")
        check_options(args)
        return args
    if args.save_dir is None:
        raise ValueError("--resume needs --save-dir <the run folder to continue>")
    config_path = Path(args.save_dir) / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"cannot resume: {config_path} not found; is {args.save_dir} a "
                                f"run folder written by train.py?")
    saved = json.loads(config_path.read_text(encoding="utf-8"))["args"]
    saved["image_size"] = tuple(saved["image_size"])
    explicit = explicit_options(parser, argv)
    conflicts = {key: (saved.get(key), value) for key, value in explicit.items()
                 if key not in RESUMABLE_CHANGES and saved.get(key) != value}
    if conflicts:
        listing = ", ".join(f"--{k.replace('_', '-')} (saved {old!r}, given {new!r})"
                            for k, (old, new) in conflicts.items())
        raise ValueError(f"--resume continues {args.save_dir} with its saved settings, but "
                         f"{listing} differ; leave them out (only --epochs may change)")
    resolved = argparse.Namespace(**{**saved, **{k: explicit[k] for k in explicit
                                                 if k in RESUMABLE_CHANGES}})
    resolved.resume, resolved.save_dir = True, args.save_dir
    check_options(resolved)
    return resolved


def split_examples(examples: list, val_fraction: float, seed: int,
                   max_images: int | None) -> tuple[list, list]:
    """Seeded random split (the original took the first 10% in file-system order): a
    permutation by `seed`, cut to `max_images`, its first `val_fraction` share is validation."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(examples))
    if max_images is not None:
        order = order[:max_images]
    num_val = int(round(len(order) * val_fraction))
    if val_fraction > 0 and num_val == 0:
        num_val = 1
    val = sorted((examples[i] for i in order[:num_val]), key=lambda e: e.name)
    train = sorted((examples[i] for i in order[num_val:]), key=lambda e: e.name)
    return train, val


def write_json(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = resolve_run(parser, argv)
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    quiet_tensorflow()
    setup_logging(save_dir / "train.log", verbose=not args.quiet)
    # Heavy imports after argument parsing, so --help and usage errors are instant.
    import keras
    import tensorflow as tf

    from datasets.augment import random_flip_scale_crop
    from datasets.data import DataSet, list_examples, load_examples, make_tf_dataset
    from learning.evaluators import AccuracyEvaluator, MeanIoUEvaluator
    from learning.optimizers import MomentumOptimizer
    from models.nn import GCN, SegNet, validate_input_shape

    height, width = args.image_size
    validate_input_shape((height, width, 3))  # fail before loading any data
    examples = list_examples(args.data)
    train_examples, val_examples = split_examples(examples, args.val_fraction, args.seed,
                                                  args.max_images)
    split = {"train": [e.name for e in train_examples], "val": [e.name for e in val_examples]}
    split_path = save_dir / SPLIT_NAME
    if args.resume and split_path.is_file():
        if json.loads(split_path.read_text(encoding="utf-8")) != split:
            raise ValueError(f"the images in {args.data} no longer give the split saved in "
                             f"{split_path}: resume needs the same data")
    write_json(split_path, split)
    if len(train_examples) < args.batch_size:
        raise ValueError(f"{len(train_examples)} training images are fewer than --batch-size "
                         f"{args.batch_size}; lower --batch-size or add images")

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(args.seed)  # weight initialisation
    strategy = (tf.distribute.MirroredStrategy() if args.distribute == "mirrored"
                else tf.distribute.get_strategy())

    augment = random_flip_scale_crop if args.augment else None
    if args.stream:
        def train_set(epoch: int) -> tf.data.Dataset:
            return make_tf_dataset(train_examples, (height, width), shuffle_seed=args.seed,
                                   epoch=epoch, augment=augment)
        val_set = make_tf_dataset(val_examples, (height, width)) if val_examples else None
    else:
        images, labels, _ = load_examples(train_examples, (height, width), where="train split")
        train_set = DataSet(images, labels, seed=args.seed, augment=augment)
        val_set = None
        if val_examples:
            images, labels, _ = load_examples(val_examples, (height, width), where="val split")
            val_set = DataSet(images, labels)

    with strategy.scope():
        model = GCN(input_shape=(height, width, 3), num_classes=args.num_classes,
                    kernel_size=args.kernel_size, pretrain=args.pretrain,
                    pretrained_dir=args.pretrained_dir, weight_decay=args.weight_decay,
                    bn_momentum=args.bn_momentum)
    if not model.pretrain_report.pretrained:
        logger.warning("the backbone is randomly initialised (--pretrain none): training starts "
                       "from scratch and needs many more epochs than fine-tuning")

    write_json(save_dir / CONFIG_NAME, {
        "args": {k: v for k, v in vars(args).items() if k != "resume"},
        "model": model.get_config(),
        "pretrain_report": model.pretrain_report.summary(),
        "num_train": len(train_examples),
        "num_val": len(val_examples),
        "replicas": strategy.num_replicas_in_sync,
        "compute_dtype": keras.mixed_precision.global_policy().compute_dtype,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__},
        "command": " ".join([os.path.basename(sys.executable), "train.py", *argv]),
    })

    optimizer = MomentumOptimizer(
        model, train_set, AccuracyEvaluator(ignore_label=model.ignore_label), val_set,
        batch_size=args.batch_size, num_epochs=args.epochs, init_learning_rate=args.lr,
        momentum=args.momentum, nesterov=args.nesterov, warmup_steps=args.warmup_steps,
        learning_rate_patience=args.patience, learning_rate_decay=args.decay, eps=args.eps,
        score_threshold=args.score_threshold, clip_norm=args.clip_norm,
        ema_momentum=args.ema_momentum, eval_batch_size=args.eval_batch_size,
        extra_evaluators=[MeanIoUEvaluator(args.num_classes, ignore_label=model.ignore_label)],
        strategy=strategy, seed=args.seed)
    try:
        results = optimizer.train(save_dir, details=True, verbose=not args.quiet,
                                  resume=args.resume)
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: the last finished epoch is saved; continue with\n"
                         f"  python train.py --resume --save-dir {save_dir}\n")
        return 130

    best_epoch = results["best_epoch"]
    if best_epoch is None:
        print(f"No epoch improved on the worst score: no best model in {save_dir}")
        return 1
    if args.export:
        exported = SegNet.load(save_dir).export(save_dir / "saved_model")
        print(f"SavedModel for serving: {exported}")
    row = results["epochs"][best_epoch - 1]
    which = "validation" if val_set is not None else "training"
    miou = row.get("eval_mean_iou")
    print(f"Best {which} pixel accuracy {results['best_score']:.4f} at epoch {best_epoch}"
          + (f" (mean IoU {miou:.4f})" if miou is not None else ""))
    print(f"Run folder {save_dir}/:\n"
          f"  best model      best_model.keras + model_config.json\n"
          f"  resume state    last_state.npz  (python train.py --resume --save-dir {save_dir})\n"
          f"  history         history.csv, history.json\n"
          f"  learning curve  learning_curve.png, learning_curve.svg\n"
          f"  TensorBoard     tensorboard/\n"
          f"  settings, log   config.json, split.json, train.log")
    print(f"Next: python test.py --data <test folder> --model {save_dir}")
    return 0


def known_errors() -> tuple[type[BaseException], ...]:
    """Failures reported as one line (exit 2) that are not GCNErrors yet. Transitional until
    issue 10: train.py's own option and resume checks still raise built-in ValueError /
    FileExistsError / FileNotFoundError, and the two training errors keep RuntimeError bases."""
    from learning.checkpoint import CheckpointError
    from learning.optimizers import NonFiniteLossError

    return (CheckpointError, NonFiniteLossError, ValueError, FileExistsError,
            FileNotFoundError)


if __name__ == "__main__":
    run(main, known_errors)
