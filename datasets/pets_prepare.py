"""The two Oxford-IIIT Pet archives -> ``<out>/{train,test}/{images,masks}`` (``prepare_pets``).

Data flow::

    annotations.tar.gz ──read once──> {name: trimap PNG bytes}, trainval.txt / test.txt names
    images.tar.gz ──streamed once──> checks ──> <staging>/pool/<name>.jpg
                                                    │ split (random | official)
    <out>/{train,test}/images/<name>.jpg, <out>/{train,test}/masks/<name>.png,
    <out>/prepare_report.json

Masks are the trimap PNGs, copied byte for byte. The split is ``datasets.split.seeded_split``
with ``test_fraction`` (the tutorial: a random 10%) or the official ``trainval.txt`` /
``test.txt`` lists. The whole output is built in a hidden sibling folder and swapped into place
at the end (``common.files.staged_dir``), so an interrupted run never leaves a half-written
``data/catdog``; only a folder holding ``prepare_report.json`` is ever replaced.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from common.errors import ConfigError
from common.files import check_replaceable, staged_dir
from datasets.archives import ArchiveError
from datasets.decode import MAX_PIXELS
from datasets.pets_archives import Annotations, read_annotations, require_archives
from datasets.pets_images import process_images
from datasets.pets_report import Conversion, PrepareReport, SkipReason
from datasets.split import seeded_split

__all__ = ["REPORT_FILE", "WRITER", "SPLITS", "official_split", "prepare_pets"]

logger = logging.getLogger(__name__)

# Written into every output folder: provenance, and the mark that lets --overwrite replace it.
REPORT_FILE = "prepare_report.json"
WRITER = "python -m datasets.pets"
SPLITS = ("random", "official")


def official_split(names: Iterable[str], *, trainval: Iterable[str],
                   test: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """``(train, test, unlisted)``, all sorted: the names listed in ``trainval`` / ``test``,
    and those in neither. A name in both lists is an error."""
    trainval_set, test_set = set(trainval), set(test)
    both = sorted(trainval_set & test_set)
    if both:
        raise ArchiveError(f"trainval.txt and test.txt both list {len(both)} names, e.g. "
                           f"{both[:3]}: the split lists are inconsistent")
    ordered = sorted(set(names))
    return ([n for n in ordered if n in trainval_set], [n for n in ordered if n in test_set],
            [n for n in ordered if n not in trainval_set and n not in test_set])


def prepare_pets(images_archive: str | os.PathLike, annotations_archive: str | os.PathLike,
                 out_dir: str | os.PathLike, *, max_side: int = 600, test_fraction: float = 0.1,
                 seed: int = 0, split: str = "random", overwrite: bool = False,
                 jpeg_quality: int = 95,
                 max_pixels: Optional[int] = MAX_PIXELS) -> PrepareReport:
    """Build ``<out_dir>/{train,test}/{images,masks}`` from the two official archives.

    See ``datasets/pets_images.py`` for the checks of each image and their order.
    ``split="random"`` holds out a seeded ``test_fraction`` of the kept images
    (``datasets.split.seeded_split``: half up, at least one image when ``test_fraction > 0``);
    ``split="official"`` follows ``annotations/trainval.txt`` and ``annotations/test.txt`` (kept
    images in neither list are skipped as ``not-in-split-lists``). The output is assembled in a
    hidden folder next to ``out_dir`` and moved into place at the end; an existing ``out_dir`` is
    refused unless ``overwrite``, and only a folder this command wrote
    (``common.files.check_replaceable``). Returns the `PrepareReport`, also saved as
    ``<out_dir>/prepare_report.json``.

    Raises:
        ConfigError: an argument out of range. MissingArchiveError: an archive is missing.
        ArchiveError: an archive is damaged or not the official one. OutputExistsError: see
        above.
    """
    _check_settings(split=split, test_fraction=test_fraction, max_side=max_side,
                    jpeg_quality=jpeg_quality, max_pixels=max_pixels)
    images_archive, annotations_archive = Path(images_archive), Path(annotations_archive)
    require_archives(images_archive, annotations_archive)
    out = Path(out_dir)
    check_replaceable(out, marker=REPORT_FILE, overwrite=overwrite, writer=WRITER)

    skipped: dict[SkipReason, list[str]] = {}
    annotations = read_annotations(annotations_archive, skipped)
    logger.info("%s: %d trimaps", annotations_archive, len(annotations.trimaps))
    if split == "official":
        missing = [f"annotations/{n}.txt" for n in ("trainval", "test")
                   if n not in annotations.lists]
        if missing:
            raise ArchiveError(f"{annotations_archive} lacks {', '.join(missing)}, needed by "
                               f"--split official (use --split random instead)")

    with staged_dir(out, marker=REPORT_FILE, overwrite=overwrite, writer=WRITER) as staging:
        pool = staging / "pool"
        pool.mkdir()
        kept, converted = process_images(images_archive, annotations.trimaps, pool, skipped,
                                         max_side=max_side, jpeg_quality=jpeg_quality,
                                         max_pixels=max_pixels)
        train, test = _split(kept, converted, skipped, annotations, split=split,
                             test_fraction=test_fraction, seed=seed)
        _move_into_splits(staging, pool, {"train": train, "test": test}, annotations.trimaps)
        report = PrepareReport(
            out_dir=out, split=split, seed=seed if split == "random" else None,
            test_fraction=test_fraction if split == "random" else None, max_side=max_side,
            train=train, test=test, converted=converted,
            skipped={reason: sorted(skipped[reason]) for reason in SkipReason
                     if skipped.get(reason)})
        info = report.to_json()
        info["sources"] = {"images_archive": str(images_archive),
                           "annotations_archive": str(annotations_archive)}
        info["jpeg_quality"] = jpeg_quality
        (staging / REPORT_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if not train or ((split == "official" or test_fraction > 0) and not test):
        logger.warning("%s: the %s set is empty", out, "train" if not train else "test")
    logger.info("%s: %d train, %d test images, %d skipped archive members", out, len(train),
                len(test), report.num_skipped)
    return report


def _check_settings(*, split: str, test_fraction: float, max_side: int, jpeg_quality: int,
                    max_pixels: Optional[int]) -> None:
    """`ConfigError` for the first setting of `prepare_pets` out of its range."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if max_side < 1:
        raise ConfigError(f"max_side must be a positive number of pixels, got {max_side}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive number of pixels, got {max_pixels}")


def _split(kept: dict[str, str], converted: dict[str, Conversion],
           skipped: dict[SkipReason, list[str]], annotations: Annotations, *, split: str,
           test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """``(train, test)`` names of the kept images. With the official lists, the kept images in
    neither list are moved from ``converted`` to ``skipped`` (``not-in-split-lists``)."""
    if split == "random":
        return seeded_split(kept, test_fraction, seed)
    train, test, unlisted = official_split(kept, trainval=annotations.lists["trainval"],
                                           test=annotations.lists["test"])
    if unlisted:
        skipped[SkipReason.NOT_IN_SPLIT_LISTS] = [kept[n] for n in unlisted]
        for name in unlisted:
            converted.pop(name, None)
    return train, test


def _move_into_splits(staging: Path, pool: Path, splits: dict[str, list[str]],
                      trimaps: dict[str, bytes]) -> None:
    """Move each split's images out of ``pool`` into ``staging/<split>/images`` and write
    their trimaps to ``staging/<split>/masks``; then delete the pool (only the images in
    neither split are left in it)."""
    for split_name, names in splits.items():
        (staging / split_name / "images").mkdir(parents=True)
        (staging / split_name / "masks").mkdir()
        for name in names:
            os.replace(pool / f"{name}.jpg", staging / split_name / "images" / f"{name}.jpg")
            (staging / split_name / "masks" / f"{name}.png").write_bytes(trimaps[name])
    shutil.rmtree(pool)
