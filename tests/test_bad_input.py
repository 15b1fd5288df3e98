"""The bad-input corpus: every kind of broken or odd input a user can hand the project, each with
the outcome it must have (the table of docs/bad-input.md lists the same cases).

Part 1 is one table of data-folder cases, each checked on both readers: ``read_data`` (in
memory) and ``make_tf_dataset`` (``--stream``), which must agree: the file is read, skipped
and counted, ignored, or refused with a one-line ``DataError`` naming it, before any batch.
Part 2 runs the commands through their boundary (``common.cli.run``, what ``python train.py``
runs; in this process, tests/commands.py) and checks the one-line error, the exit code, and that
nothing was written or overwritten. Cases tested in a module's own test file are
named at the end (``ELSEWHERE``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from commands import assert_one_line_error, run_command
from imagefiles import (bmp_header, cmyk_jpeg, jpeg, noise, png, png_gray_alpha, trimap,
                        truncated, with_exif_orientation)

from common.errors import EXIT_ERROR, EXIT_OK, EXIT_SYSTEM, DataError
from datasets.data import read_data
from datasets.examples import MissingFilesError, list_examples
from datasets.labels import DataFormatError
from datasets.pipeline import make_tf_dataset
from datasets.utils import crop_shape, padding

ROOT = Path(__file__).resolve().parents[1]
SIZE = (8, 8)
GOOD_BGR = noise(8, 8, 0)       # Abyssinian_1, the one good example of every case
BGR = noise(6, 10, 1)           # the case's own image (stored grid 6x10)
TRIMAP = trimap(6, 10)


def _files(extra: dict[str, bytes | None] | None = None) -> dict[str, bytes | None]:
    """The good example plus ``extra`` (relative path -> bytes; None makes a folder)."""
    files = {"images/Abyssinian_1.png": png(GOOD_BGR), "masks/Abyssinian_1.png": png(trimap(8, 8))}
    return files | (extra or {})


def _pair(image: bytes, mask: bytes | None = None, name: str = "beagle_2",
          ext: str = "jpg") -> dict[str, bytes | None]:
    """The good example plus ``images/<name>.<ext>`` and its mask (the trimap by default)."""
    return _files({f"images/{name}.{ext}": image,
                   f"masks/{name}.png": png(TRIMAP) if mask is None else mask})


def _rgb(data: bytes) -> np.ndarray:
    """What a plain OpenCV decode of ``data`` gives, as RGB (EXIF not applied)."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)[..., ::-1]


SMALL = noise(3, 5, 2)
# 3x5 -> drop the first row and column (odd sides) -> 2x4, padded to 8x8 at offset (3, 2).
SMALL_PADDED = np.zeros((8, 8, 3), np.uint8)
SMALL_PADDED[3:5, 2:6] = SMALL[1:, 1:, ::-1]
SMALL_LABEL = np.zeros((8, 8), np.uint8)  # an all-foreground dog mask, padded with background
SMALL_LABEL[3:5, 2:6] = 2


def _expected_label(t: np.ndarray, fg: int = 2) -> np.ndarray:
    """A trimap of a dog mapped to class indices, cropped/padded to SIZE like load_example."""
    return padding(crop_shape(np.array([255, fg, 0, 255], np.uint8)[t], SIZE), SIZE)


def _crop(rgb: np.ndarray) -> np.ndarray:
    return padding(crop_shape(rgb, SIZE), SIZE)


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    files: dict[str, bytes | None]
    outcome: str                      # "read", "skipped", "ignored" or "error"
    expect: Callable | str | None = None  # read: check(image, label); error: message regex
    error: type = DataError


CASES = [
    # -- images that cannot be decoded: skipped, counted once --------------------------------
    Case("zero-byte image", _pair(b""), "skipped"),
    Case("truncated JPEG", _pair(truncated(jpeg(BGR))), "skipped"),
    Case("text file named .jpg", _pair(b"Not an image, just notes.\n" * 10), "skipped"),
    Case("TIFF data named .jpg (not JPEG/PNG/BMP)",
         _pair(cv2.imencode(".tiff", BGR)[1].tobytes()), "skipped"),
    Case("header claims 70000x70000 (BMP bomb named .jpg)", _pair(bmp_header(70000, 70000)),
         "skipped"),
    Case("truncated mask", _pair(jpeg(BGR), truncated(png(TRIMAP), 0.6)), "skipped"),
    # -- odd but valid images: read, converted to RGB uint8 ----------------------------------
    Case("PNG data named .jpg", _pair(png(BGR)), "read",
         lambda image, label: np.array_equal(image, _crop(BGR[..., ::-1]))),
    Case("grayscale JPEG", _pair(jpeg(BGR[..., 0])), "read",
         lambda image, label: (image[..., 0] == image[..., 1]).all()
         and (image[..., 1] == image[..., 2]).all()),
    Case("RGBA PNG (alpha dropped, colour kept)",
         _pair(png(np.dstack([BGR, np.zeros((6, 10), np.uint8)])), ext="png"), "read",
         lambda image, label: np.array_equal(image, _crop(BGR[..., ::-1]))),
    Case("CMYK JPEG", _pair(cmyk_jpeg(6, 10, (0, 255, 255, 0))), "read",
         lambda image, label: (image[1:7, :, 0] > 240).all() and (image[1:7, :, 1:] < 15).all()),
    Case("16-bit PNG image (>> 8)", _pair(png(BGR.astype(np.uint16) * 257), ext="png"), "read",
         lambda image, label: np.array_equal(image, _crop(BGR[..., ::-1]))),
    Case("JPEG with EXIF orientation 6 (read on its stored grid, like its mask)",
         _pair(with_exif_orientation(jpeg(BGR), 6)), "read",
         lambda image, label: np.array_equal(image, _crop(_rgb(jpeg(BGR))))
         and np.array_equal(label, _expected_label(TRIMAP))),
    Case("image smaller than the crop (padded: image 0, label background)",
         _pair(png(SMALL), png(np.ones((3, 5), np.uint8)), ext="png"), "read",
         lambda image, label: np.array_equal(image, SMALL_PADDED)
         and np.array_equal(label, SMALL_LABEL)),
    Case("spaces and non-ASCII in names", _pair(png(BGR), name="Bombay 3 ünïcødé", ext="png"),
         "read", lambda image, label: set(np.unique(label)) <= {0, 1, 255}),
    # -- masks: accepted if they are trimaps, else refused naming the file -------------------
    Case("16-bit mask", _pair(jpeg(BGR), png(TRIMAP.astype(np.uint16))), "read",
         lambda image, label: np.array_equal(label, _expected_label(TRIMAP))),
    Case("RGB mask with equal channels", _pair(jpeg(BGR), png(np.dstack([TRIMAP] * 3))), "read",
         lambda image, label: np.array_equal(label, _expected_label(TRIMAP))),
    Case("RGB mask with different channels",
         _pair(jpeg(BGR), png(np.dstack([TRIMAP, TRIMAP, TRIMAP * 0 + 2]))), "error",
         r"beagle_2\.png has 3 channels with different contents", DataFormatError),
    Case("gray + alpha mask", _pair(jpeg(BGR), png_gray_alpha(TRIMAP)), "error",
         r"beagle_2\.png has 4 channels with different contents", DataFormatError),
    Case("mask values outside {1, 2, 3} (a 0/255 binary mask)",
         _pair(jpeg(BGR), png((TRIMAP == 1).astype(np.uint8) * 255)), "error",
         r"beagle_2\.png has values \[0, 255\] outside the trimap values", DataFormatError),
    Case("mask saved as JPEG (lossy values) under a .png name",
         _pair(jpeg(BGR), jpeg(TRIMAP * 80)), "error", r"beagle_2\.png has values .* outside",
         DataFormatError),
    Case("mask and image of different sizes", _pair(jpeg(BGR), png(trimap(6, 11))), "error",
         r"beagle_2\.png is 6x11 .*beagle_2\.jpg is 6x10: a mask must have exactly its image",
         DataFormatError),
    # -- names and layout --------------------------------------------------------------------
    Case("image without mask", _files({"images/beagle_2.jpg": jpeg(BGR)}), "error",
         r"1 of 2 images .* have no mask .*beagle_2\.jpg \(no masks/beagle_2\.png\)",
         MissingFilesError),
    Case("mask without image", _files({"masks/beagle_2.png": png(TRIMAP)}), "ignored"),
    Case("mask name differing only in case", _files({
        "images/beagle_2.jpg": jpeg(BGR), "masks/Beagle_2.png": png(TRIMAP)}), "error",
         "differs only in case", MissingFilesError),
    Case("a.jpg and a.png (would share a mask)", _pair(jpeg(BGR)) | {
        "images/beagle_2.png": png(BGR)}, "error",
         r"share a stem and would share one mask: beagle_2\.jpg and beagle_2\.png",
         DataFormatError),
    Case("macOS ._* files", _files({"images/._Abyssinian_1.png": b"\x00\x05\x16\x07junk",
                                    "masks/._Abyssinian_1.png": b"\x00\x05\x16\x07junk"}),
         "ignored"),
    Case("hidden files", _files({"images/.DS_Store": b"\x00\x00\x00\x01Bud1",
                                 "images/.hidden_1.jpg": jpeg(BGR)}), "ignored"),
    Case("folder named like an image", _files({"images/album.jpg": None}), "ignored"),
    Case("names that are not <Oxford breed>_<number> (classed by first letter, counted)",
         _pair(png(BGR), name="IMG_0001", ext="png"), "read",
         lambda image, label: set(np.unique(label)) == {0, 1, 255}),  # "I": a cat
    Case("empty folder", {}, "error", r"no 'images' folder in", MissingFilesError),
    Case("empty images/ folder", {"images/": None, "masks/": None}, "error",
         r"no images in .*images", MissingFilesError),
]


def _write(root: Path, files: dict[str, bytes | None]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return root


def _stream(folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(make_tf_dataset(list_examples(folder), SIZE).as_numpy_iterator())


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_data_folder_corpus(case, tmp_path, caplog):
    folder = _write(tmp_path / "data", case.files)
    if case.outcome == "error":
        with pytest.raises(case.error, match=case.expect):
            read_data(folder, SIZE)
        with pytest.raises(case.error, match=case.expect):  # --stream: when it is built
            _stream(folder)
        return
    with caplog.at_level(logging.WARNING, logger="datasets"):
        X, y, names = read_data(folder, SIZE, return_names=True)
    elements = _stream(folder)
    assert len(elements) == len(names)  # both readers keep the same examples ...
    for row, (image, label) in enumerate(elements):  # ... with the same arrays
        np.testing.assert_array_equal(image, X[row])
        np.testing.assert_array_equal(label, y[row])
    if case.outcome in ("skipped", "ignored"):
        assert names == ["Abyssinian_1.png"]
        skipped = "skipped 1 unreadable file(s) of 2 examples" in caplog.text
        assert skipped == (case.outcome == "skipped"), caplog.text
    else:
        assert len(names) == 2, names
        row = next(i for i, name in enumerate(names) if name != "Abyssinian_1.png")
        assert case.expect(X[row], y[row])


def test_the_corpus_has_30_kinds_at_least():
    assert len(CASES) + len(SCRIPT_CASES) + len(ELSEWHERE) >= 30
    assert len({case.kind for case in CASES}) == len(CASES)


def test_a_missing_folder_is_named():
    with pytest.raises(MissingFilesError, match="'/no/such/folder' does not exist"):
        read_data("/no/such/folder", SIZE)


# ---------------------------------------------------------------------------------------------
# Part 2: the commands, run as a user runs them
# ---------------------------------------------------------------------------------------------

def _one_line_error(result, code: int, *fragments: str) -> str:
    return assert_one_line_error(result, *fragments, code=code)


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory) -> Path:
    """A run folder of a tiny 2-class model (64x64, random weights) whose split.json says it
    trained on Abyssinian_1.jpg."""
    from tiny import tiny_model

    run = tmp_path_factory.mktemp("run")
    tiny_model(num_classes=2).save(run)
    (run / "split.json").write_text(json.dumps({"train": ["Abyssinian_1.jpg"], "val": []}))
    return run


@pytest.fixture
def testset(tmp_path) -> Path:
    folder = tmp_path / "test"
    for name, seed in (("Abyssinian_1", 1), ("beagle_2", 2)):
        _write(folder, {f"images/{name}.jpg": jpeg(noise(6, 10, seed)),
                        f"masks/{name}.png": png(TRIMAP)})
    return folder


SCRIPT_CASES = [
    "draw.py --out is the input folder", "test.py --out is the data's images/",
    "test.py --out is the data folder itself (masks/ would be overwritten)",
    "draw.py on a plain folder with a.jpg and a.png", "unwritable output folder",
    "test.py with a model of another class count (and test images in its split.json)",
    "test.py with a hand-edited model_config.json",
    "train.py --resume with a hand-edited config.json",
    "datasets.synthetic --overwrite on a folder it did not write",
    "datasets.pets with a zero-byte image member",
]


def test_writers_refuse_to_write_into_their_input_folders(testset, tmp_path):
    photos = _write(tmp_path / "photos", {"a.jpg": jpeg(noise(6, 10, 3)),
                                          "a.png": png(noise(6, 10, 4))})
    before = {"test": _tree(testset), "photos": _tree(photos)}
    nowhere = tmp_path / "no-model"  # never reached: the guards run before the model is loaded
    _one_line_error(run_command("draw.py", "--images", photos, "--model", nowhere,
                                 "--out", photos, "--no-masks"),
                    EXIT_ERROR, "is the input folder", "choose another --out")
    _one_line_error(run_command("test.py", "--data", testset, "--model", nowhere,
                                 "--out", testset / "images"), EXIT_ERROR, "is the input folder")
    _one_line_error(run_command("test.py", "--data", testset, "--model", nowhere,
                                 "--out", testset), EXIT_ERROR, "below --out")
    _one_line_error(run_command("draw.py", "--images", photos, "--model", nowhere),
                    EXIT_ERROR, "share a stem", "a.jpg and a.png", "masks/<stem>.png")
    (tmp_path / "a_file").write_text("a file where the output folder should go")
    _one_line_error(run_command("draw.py", "--images", photos, "--model", nowhere, "--no-masks",
                                 "--out", tmp_path / "a_file" / "draws"),
                    EXIT_SYSTEM, "cannot write into --out")
    assert {"test": _tree(testset), "photos": _tree(photos)} == before


def test_test_py_refuses_a_model_of_other_classes_and_warns_about_leakage(testset,
                                                                          two_class_run):
    result = run_command("test.py", "--data", testset, "--model", two_class_run)
    _one_line_error(result, EXIT_ERROR, "predicts 2 classes", "have 3 (background, cat, dog)")
    assert "1 of the 2 test images were used for training or validation" in result.stderr
    assert "Abyssinian_1.jpg" in result.stderr
    assert not (testset / "draws").exists()


def test_test_py_reports_a_hand_edited_model_config_in_one_line(testset, two_class_run,
                                                                 tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    document = json.loads((two_class_run / "model_config.json").read_text())
    document["config"]["input_shape"] = "64x64"
    (broken / "model_config.json").write_text(json.dumps(document))
    (broken / "best_model.keras").symlink_to(two_class_run / "best_model.keras")
    _one_line_error(run_command("test.py", "--data", testset, "--model", broken), EXIT_ERROR,
                    "model_config.json: 'input_shape' must be a list")
    assert not (testset / "draws").exists()


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c["optim"].update(num_epochs="ten"), "optim: num_epochs must be int, got 'ten'"),
    (lambda c: c["data"].update(image_size=64), "data: image_size must be tuple"),
    (lambda c: c["optim"].update(learning_rate_decay=3.0), "--decay (learning_rate_decay)"),
    (lambda c: c.pop("model"), "expected the sections"),
])
def test_train_resume_with_a_hand_edited_config_is_one_line_naming_it(tmp_path, edit, fragment):
    from learning.config import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig.from_options({"image_size": (64, 64), "save_dir": str(run)}).to_dict()
    edit(config)
    (run / "config.json").write_text(json.dumps({"config": config}))
    before = _tree(run)
    _one_line_error(run_command("train.py", "--resume", "--save-dir", run), EXIT_ERROR,
                    "config.json", fragment)
    assert _tree(run) == before


def test_synthetic_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path):
    from datasets import synthetic

    real = _write(tmp_path / "catdog", {"train/images/Bombay_1.jpg": jpeg(noise(6, 10, 5)),
                                        "train/masks/Bombay_1.png": png(TRIMAP)})
    before = _tree(real)
    _one_line_error(run_command(synthetic.main, "--out", real, "--overwrite",
                                 "--num-images", 2), EXIT_ERROR, "refusing to replace",
                    "synthetic_pets.json")
    assert _tree(real) == before and sorted(os.listdir(tmp_path)) == ["catdog"]


def test_pets_prepares_archives_with_a_zero_byte_image(tmp_path):
    from datasets import pets

    # The report: one zero-byte images/*.jpg killed the whole preparation.
    archives = {"images.tar.gz": {"images/Abyssinian_1.jpg": jpeg(noise(6, 10, 6)),
                                  "images/Bombay_2.jpg": b"",
                                  "images/beagle_3.jpg": jpeg(noise(6, 10, 7))},
                "annotations.tar.gz": {f"annotations/trimaps/{n}.png": png(TRIMAP)
                                       for n in ("Abyssinian_1", "Bombay_2", "beagle_3")}}
    for archive, members in archives.items():
        with tarfile.open(tmp_path / archive, "w:gz") as tar:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    result = run_command(pets.main, "--images-archive", tmp_path / "images.tar.gz",
                          "--annotations-archive", tmp_path / "annotations.tar.gz",
                          "--out", tmp_path / "catdog", "--test-fraction", 0.3)
    assert result.returncode == EXIT_OK, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"undecodable\s+1\s", result.stdout), result.stdout
    kept = sorted(p.name for split in ("train", "test")
                  for p in (tmp_path / "catdog" / split / "images").iterdir())
    assert kept == ["Abyssinian_1.jpg", "beagle_3.jpg"]


# Cases whose tests live in the sibling test file of the module that handles them.
ELSEWHERE = {
    "--stream: a bad mask is refused when the pipeline is built, not mid-epoch":
        "test_data.py::test_tf_dataset_checks_masks_when_built_not_while_batches_are_read",
    "--stream: a mask broken after the check is skipped, not an InvalidArgumentError":
        "test_data.py::test_tf_dataset_skips_a_mask_broken_after_the_check_instead_of_failing",
    "all 8 EXIF orientations line up with the mask":
        "test_data.py::test_an_image_lines_up_with_its_mask_whatever_its_exif_orientation",
    "oversized images (pixel limit) skipped without decoding":
        "test_data.py::test_oversized_images_are_skipped_and_counted_without_decoding",
    "a weights file of another class count or input size than model_config.json":
        "test_nn.py::test_weights_from_another_config_are_rejected",
    "a corrupted .keras file (truncated, empty, text, bad CRC)":
        "test_nn.py::test_a_damaged_keras_file_is_a_model_error_naming_it",
    "a missing model_config.json": "test_scripts.py::test_cli_errors_are_one_line",
    "pets: BMP header 70000x70000 and a zero-byte member, counted skips":
        "test_pets.py::test_a_zero_byte_member_and_a_bmp_bomb_are_counted_skips_not_crashes",
    "pets: unsafe archive members (absolute paths, '..', links, devices)":
        "test_pets.py::test_malicious_members_are_rejected_and_nothing_is_written_outside",
    "pets: damaged or swapped archives":
        "test_pets.py::test_damaged_or_swapped_archives_give_clear_errors",
    "disk full, out of memory (Python, TensorFlow, OpenCV): one line, exit 3":
        "test_cli.py::test_expected_failures_are_one_line_with_their_exit_code",
    "a bug (even a ValueError) keeps its traceback, exit 1":
        "test_cli.py::test_a_bug_exits_1_with_the_full_traceback_in_a_real_process",
    "synthetic --overwrite: the old set survives a failed build":
        "test_synthetic.py::test_the_new_set_is_built_aside_and_the_old_one_survives_a_failure",
}


def test_every_case_named_elsewhere_exists():
    for target in ELSEWHERE.values():
        module, name = target.split("::")
        assert f"def {name}(" in (ROOT / "tests" / module).read_text(), target
