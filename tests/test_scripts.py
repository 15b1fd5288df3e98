"""End to end: train.py -> test.py -> draw.py on a tiny synthetic pet set, 64x64 crops.

The commands run through their boundary (``common.cli.run``, what ``python train.py`` runs): in
this process where an exit code and stdout/stderr say it all, in a process of their own where
the process is what is tested (SIGTERM, two workers, the ``__main__`` line). train.py builds
the real GCN (ResNet-50) in ``test_train_trains_and_saves_the_real_gcn`` only; elsewhere it gets
a TinyGCN (tests/tiny.py: the GCN's constructor, config and save/load on a two-convolution
body), and test.py and draw.py read those tiny run folders. One tiny run is trained once for the
whole test run (``shared_once``) and copied by the tests that change it.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from commands import (PythonProcess, assert_one_line_error, free_ports, run_command,
                      run_process, tf_config)
from tiny import TRAIN_WITH_TINY_GCN, swap_gcn

from datasets.data import read_data
from datasets.synthetic_dataset import generate_pets


def make_pets(root: Path) -> Path:
    generate_pets(root, num_images=15, test_fraction=0.2, min_size=50, max_size=90,
                  num_unlabeled=3, seed=5)
    # An unreadable file among the unlabelled images: draw.py must skip it, not stop.
    (root / "unlabeled" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def train_args(pets: Path) -> tuple:
    """A two-epoch run on the tiny pets (train.py's arguments but the run folder)."""
    return ("--data", pets / "train", "--image-size", 64, "--epochs", 2, "--batch-size", 2,
            "--val-fraction", 0.25, "--pretrain", "none", "--clip-norm", 1.0,
            "--bn-momentum", 0.9, "--lr", 0.01)


@pytest.fixture
def tiny_gcn(monkeypatch):
    """train.py builds a TinyGCN in this process until the test ends."""
    swap_gcn(monkeypatch)


@pytest.fixture(scope="session")
def shared(shared_once) -> Path:
    """``pets/`` and ``run/``, a two-epoch TinyGCN run on them, made once for every test
    process (only read: a run folder names its data folder, so both stay where they are)."""
    def build(root: Path) -> None:
        pets = make_pets(root / "pets")
        with pytest.MonkeyPatch.context() as monkeypatch:
            swap_gcn(monkeypatch)
            result = run_command("train.py", *train_args(pets), "--save-dir", root / "run")
        assert result.returncode == 0, result.stderr
        assert "Best validation pixel accuracy" in result.stdout

    return shared_once("scripts_run", build)


@pytest.fixture
def pets(shared) -> Path:
    return shared / "pets"


@pytest.fixture
def run_dir(shared) -> Path:
    return shared / "run"


def test_train_writes_a_complete_run_folder(run_dir, pets):
    # The shared run: train.py with train_args(pets), the TinyGCN in place of the GCN.
    for name in ("config.json", "model_config.json", "best_model.keras", "last_state.npz",
                 "history.csv", "history.json", "learning_curve.png", "learning_curve.svg",
                 "split.json", "train.log"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["data"]["image_size"] == [64, 64]
    assert config["config"]["optim"]["num_epochs"] == 2
    assert config["model"]["kernel_size"] == [1, 1]  # 64 // 32 - 1
    split = json.loads((run_dir / "split.json").read_text())
    train_names = sorted(p.name for p in (pets / "train" / "images").iterdir())
    assert sorted(split["train"] + split["val"]) == train_names
    assert len(split["val"]) == 3  # round(12 * 0.25)
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["eval_accuracy"]) <= 1.0 for r in rows)
    assert all(int(r["steps"]) == 4 for r in rows)  # 9 training images // batch 2


def test_train_trains_and_saves_the_real_gcn(pets, tmp_path):
    # The one run of train.py with the real GCN (ResNet-50) in the suite: one epoch of two
    # steps (--max-images 6: 2 for validation, 4 to train in batches of 2).
    run_dir = tmp_path / "gcn"
    result = run_command("train.py", *train_args(pets), "--save-dir", run_dir,
                         "--epochs", 1, "--max-images", 6)
    assert result.returncode == 0, result.stderr
    assert "Best validation pixel accuracy" in result.stdout
    assert json.loads((run_dir / "model_config.json").read_text())["class_name"] == "GCN"
    assert json.loads((run_dir / "config.json").read_text())["model"]["kernel_size"] == [1, 1]
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["steps"] for row in history["epochs"]] == [2]
    assert len(history["step_losses"]) == 2 and all(np.isfinite(history["step_losses"]))
    assert (run_dir / "best_model.keras").stat().st_size > 50_000_000   # ResNet-50's weights


def test_resume_continues_the_run_and_refuses_changed_settings(run_dir, tmp_path, tiny_gcn):
    run_dir = Path(shutil.copytree(run_dir, tmp_path / "run"))
    changed = run_command("train.py", "--resume", "--save-dir", run_dir, "--lr", 0.5)
    assert_one_line_error(changed, "--lr", "saved 0.01")
    fresh = run_command("train.py", "--data", "nowhere", "--save-dir", run_dir)
    assert_one_line_error(fresh, "already holds a run", "--resume")

    before = (run_dir / "history.csv").read_text().splitlines()
    resumed = run_command("train.py", "--resume", "--save-dir", run_dir, "--epochs", 3)
    assert resumed.returncode == 0, resumed.stderr
    after = (run_dir / "history.csv").read_text().splitlines()
    assert after[:3] == before and len(after) == 4  # header + epochs 1, 2 kept, epoch 3 added
    assert after[3].startswith("3,")


def test_sigterm_stops_training_with_a_resumable_state_and_resume_ends_the_same_run(
        run_dir, pets, tmp_path, tiny_gcn):
    # The same command as the shared run, in its own process, stopped by SIGTERM during its
    # first epoch.
    folder = tmp_path / "stopped"
    process = PythonProcess(tmp_path, "-c", TRAIN_WITH_TINY_GCN, *train_args(pets),
                            "--save-dir", folder)
    process.wait_for_line("training 2 epochs")          # the loop has started
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stopped by SIGTERM at epoch 1, step" in errors[0]
    assert f"--resume --save-dir {folder}" in errors[0]

    resumed = run_command("train.py", "--resume", "--save-dir", folder)
    assert resumed.returncode == 0, resumed.stderr
    got = json.loads((folder / "history.json").read_text())
    expected = json.loads((run_dir / "history.json").read_text())
    assert got["step_losses"][:8] == pytest.approx(expected["step_losses"][:8], rel=1e-5)
    for row, want in zip(got["epochs"], expected["epochs"][:2]):
        assert row["eval_accuracy"] == pytest.approx(want["eval_accuracy"], rel=1e-6)
        assert row["lr"] == want["lr"]


def test_an_option_error_leaves_no_folder_behind(pets, tmp_path):
    folder = tmp_path / "never"
    bad = run_command("train.py", "--data", pets / "train", "--batch-size", 0, "--decay", 2,
                      "--save-dir", folder)
    assert_one_line_error(bad, "--batch-size (batch_size) must be a positive integer",
                          "--decay (learning_rate_decay) must be in (0, 1]")
    missing = run_command("train.py", "--data", tmp_path / "missing", "--save-dir", folder)
    assert_one_line_error(missing, "missing")
    assert not folder.exists()


def test_a_second_train_on_a_live_run_folder_is_refused_naming_its_process(pets, tmp_path,
                                                                          tiny_gcn):
    from learning.run_folder import RunFolder

    with RunFolder(tmp_path / "live").open(resume=False):
        result = run_command("train.py", *train_args(pets), "--save-dir", tmp_path / "live")
    assert_one_line_error(result, "in use by another training process", f"pid {os.getpid()}")


def test_test_script_scores_and_draws_at_original_resolution(run_dir, pets, tmp_path):
    out = tmp_path / "draws"
    # --mode full: the drawing checks below compare pixels with the image, and the toy model's
    # masks enlarged from resize mode's 64 px frames cover more of it (more JPEG colour bleed).
    result = run_command("test.py", "--data", pets / "test", "--model", run_dir, "--out", out,
                         "--save-masks", "--mode", "full")
    assert result.returncode == 0, result.stderr
    assert "Pixel accuracy" in result.stdout and "Mean IoU" in result.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    names = sorted(p.name for p in (pets / "test" / "images").iterdir())
    assert metrics["num_images"] == len(names) == 3
    # The confusion matrix counts exactly the known pixels of the 64x64 frames.
    _, labels = read_data(pets / "test", (64, 64))
    frame = metrics["frame"]
    assert np.sum(frame["confusion_matrix"]) == np.count_nonzero(labels != 255)
    assert 0.0 <= frame["pixel_accuracy"] <= 1.0 and 0.0 <= frame["mean_iou"] <= 1.0
    # ... and equal the scores of the saved model's own predictions, recomputed here.
    from learning.evaluators import AccuracyEvaluator
    from models.nn import SegNet

    model = SegNet.load(run_dir)
    images, labels = read_data(pets / "test", (64, 64))
    expected = AccuracyEvaluator().score(labels, model.predict(images, output="mask"))
    assert frame["pixel_accuracy"] == pytest.approx(expected, abs=1e-9)

    # One summary sheet: the 3 test images once each (all below its 160 px thumbnail size),
    # side by side, each panel as large as the largest image.
    sheet = cv2.imread(str(out / "summary_sheet.png"))
    assert sheet is not None and "summary_sheet.png" in result.stdout
    from learning.previews import GridLayout

    shapes = [cv2.imread(str(pets / "test" / "images" / n)).shape for n in names]
    panel = (max(s[0] for s in shapes), max(s[1] for s in shapes))
    assert sheet.shape[1] == GridLayout(3, panel, 3).shape[1]

    for name in names:  # named after the image, at the image's own resolution
        original = cv2.imread(str(pets / "test" / "images" / name))
        drawn = cv2.imread(str(out / name))
        assert drawn is not None and drawn.shape == original.shape, name
        mask = cv2.imread(str(out / "masks" / (name[:-4] + ".png")), cv2.IMREAD_UNCHANGED)
        assert mask.shape == original.shape[:2] and set(np.unique(mask)) <= {0, 1, 2}
        # Where the model predicts background the drawing is the image itself (up to JPEG).
        background = mask == 0
        if background.any():
            difference = np.abs(drawn.astype(int) - original.astype(int))[background]
            assert difference.mean() < 6.0, name


def test_draw_script_skips_unreadable_files_and_keeps_sizes(run_dir, pets, tmp_path):
    out = tmp_path / "drawn"
    result = run_command("draw.py", "--images", pets / "unlabeled", "--model", run_dir,
                         "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Drew 3 of 4 images" in result.stdout and "Skipped 1" in result.stdout
    assert "broken.jpg" in result.stderr
    for source in (pets / "unlabeled").iterdir():
        if source.name == "broken.jpg":
            assert not (out / source.name).exists()
            continue
        original = cv2.imread(str(source))
        assert cv2.imread(str(out / source.name)).shape == original.shape, source.name
        mask = cv2.imread(str(out / "masks" / (source.stem + ".png")), cv2.IMREAD_UNCHANGED)
        assert mask.shape == original.shape[:2]


def test_cli_errors_are_one_line(pets, run_dir, tmp_path):
    assert_one_line_error(run_command("train.py", "--data", tmp_path / "missing",
                                      "--save-dir", tmp_path / "r1"), "missing")
    assert_one_line_error(run_command("train.py", "--data", pets / "train", "--image-size", 100,
                                      "--epochs", 1, "--pretrain", "none",
                                      "--save-dir", tmp_path / "r2"), "multiple of 32")
    assert_one_line_error(run_command("test.py", "--data", pets / "test", "--model", tmp_path),
                          "model_config.json")
    assert_one_line_error(run_command("draw.py", "--images", tmp_path / "nothing-here",
                                      "--model", run_dir), "nothing-here")


def test_the_scripts_run_their_boundary_as_their_own_processes(tmp_path):
    # `python <script>` calls common.cli.run(main): one line and the exit code, also before
    # TensorFlow is imported (these stop that early, so each process takes about a second).
    usage = run_process("train.py", "--epochs", "many")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr
    assert_one_line_error(run_process("draw.py", "--images", tmp_path / "nothing-here",
                                      "--model", tmp_path), "nothing-here", code=2)
    (tmp_path / "test" / "images").mkdir(parents=True)
    assert_one_line_error(run_process("test.py", "--data", tmp_path / "test", "--model",
                                      tmp_path, "--out", tmp_path / "test" / "images"),
                          "is the input folder", code=2)
    # What test.py and draw.py import before their refusals holds no TensorFlow.
    imports = run_process("-c", "import sys, common.files, datasets.examples, learning.run_info;"
                          " print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    assert imports.stdout.strip() == "[]", imports.stderr


def test_train_on_two_worker_processes_writes_one_run_from_the_chief(pets, tmp_path):
    ports = free_ports(2)
    folder = tmp_path / "shared"
    processes = [PythonProcess(
        tmp_path, "-c", TRAIN_WITH_TINY_GCN, "--data", pets / "train", "--image-size", 64,
        "--epochs", 1, "--batch-size", 4, "--max-images", 10, "--val-fraction", 0.2,
        "--pretrain", "none", "--clip-norm", 1, "--bn-momentum", 0.9, "--lr", 0.01, "--stream",
        "--save-dir", folder, name=f"worker{index}", TF_CONFIG=tf_config(ports, index))
        for index in range(2)]
    results = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    assert "Best validation pixel accuracy" in results[0][0]
    assert "Worker 1 of 2 done" in results[1][0]
    config = json.loads((folder / "config.json").read_text())
    assert config["replicas"] == 2 and config["config"]["run"]["distribute"] == "auto"
    history = json.loads((folder / "history.json").read_text())
    assert [row["steps"] for row in history["epochs"]] == [2]      # 8 images // batch 4
    log = (folder / "train.log").read_text()
    assert "worker 0 of 2 (chief)" in log and "worker 1" not in log


def test_multi_worker_training_without_a_save_dir_is_refused(pets, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    result = run_command("train.py", "--data", pets / "train")
    assert_one_line_error(result, "multi-worker training needs --save-dir")


# ---------------------------------------------------------------------------------------------
# Your own data: five classes of index masks, label errors, runs from before label formats
# ---------------------------------------------------------------------------------------------

SCENE_NAMES = ["background", "cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    generate_pets(root, num_images=16, test_fraction=0.25, min_size=50, max_size=90,
                  num_unlabeled=2, seed=3, num_classes=5)
    return root


def median_frequency_by_hand(masks: list[np.ndarray], num_classes: int) -> list[float]:
    """freq_c = pixels of c / labelled pixels of the images containing c; w = median / freq."""
    pixels = np.zeros(num_classes)
    present = np.zeros(num_classes)
    for mask in masks:
        counts = np.array([np.sum(mask == c) for c in range(num_classes)], float)
        pixels += counts
        present += np.where(counts > 0, counts.sum(), 0)
    freq = pixels / present
    return list(np.median(freq) / freq)


def test_five_classes_train_with_auto_weights_then_test_prints_five_named_ious(scenes, tmp_path,
                                                                              tiny_gcn):
    run = tmp_path / "five"
    result = run_command("train.py", "--data", scenes / "train", "--image-size", 64,
                         "--epochs", 1, "--batch-size", 4, "--val-fraction", 0.25,
                         "--pretrain", "none", "--class-weights", "auto", "--export",
                         "--save-dir", run)
    assert result.returncode == 0, result.stderr
    assert "label format index (--label-format auto" in result.stderr
    assert "class pixel shares: background" in result.stderr        # the data check's summary
    # --export: SavedModel and both TFLite models, checked on validation images.
    assert f"SavedModel: {run / 'saved_model'}" in result.stdout
    assert "checked on 3 images against the Keras model" in result.stdout   # 3 validation images
    assert "float32: " in result.stdout and "float16: " in result.stdout
    assert (run / "model_float32.tflite").is_file() and (run / "model_float16.tflite").is_file()
    assert json.loads((run / "export.json").read_text())["class_names"] == SCENE_NAMES

    config = json.loads((run / "config.json").read_text())
    assert config["config"]["model"]["num_classes"] == 5
    assert config["labels"]["label_format"] == {"kind": "index", "class_names": SCENE_NAMES,
                                                "palette": None}
    model = json.loads((run / "model_config.json").read_text())["config"]
    assert model["class_names"] == SCENE_NAMES
    # The auto weights: median frequency of the training split's labels at 64x64, by hand.
    from datasets.utils import crop_shape, padding

    train_names = json.loads((run / "split.json").read_text())["train"]
    masks = [padding(crop_shape(cv2.imread(str(scenes / "train" / "masks" / f"{name[:-4]}.png"),
                                           cv2.IMREAD_UNCHANGED), (64, 64)), (64, 64))
             for name in train_names]
    expected = median_frequency_by_hand(masks, 5)
    assert model["class_weights"] == pytest.approx(expected, rel=1e-9)
    assert config["labels"]["class_weights"] == model["class_weights"]

    out = tmp_path / "drawn"
    tested = run_command("test.py", "--data", scenes / "test", "--model", run, "--out", out)
    assert tested.returncode == 0, tested.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["frame"]["per_class_iou"]) == SCENE_NAMES
    assert "per class: " + ", ".join(
        f"{name} {metrics['frame']['per_class_iou'][name]:.4f}" for name in SCENE_NAMES) \
        in tested.stdout
    drawn = run_command("draw.py", "--images", scenes / "unlabeled", "--model", run, "--out",
                        tmp_path / "unlabeled")
    assert drawn.returncode == 0 and "Drew 2 of 2 images" in drawn.stdout, drawn.stderr


def test_train_refuses_a_mask_outside_the_classes_in_one_line_before_any_folder(scenes,
                                                                              tmp_path):
    data = tmp_path / "data"
    shutil.copytree(scenes / "train", data)
    mask_path = sorted((data / "masks").iterdir())[5]
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    mask[0, 0] = 9
    cv2.imwrite(str(mask_path), mask)
    result = run_command("train.py", "--data", data, "--image-size", 64, "--epochs", 1,
                         "--pretrain", "none", "--save-dir", tmp_path / "never")
    assert_one_line_error(result, mask_path.name, "values [9] outside the 5 classes")
    assert not (tmp_path / "never").exists()


def test_a_run_made_before_the_label_options_still_resumes(run_dir, tmp_path, tiny_gcn):
    # A run folder as train.py wrote it before label formats: no new settings, no "labels".
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config = json.loads((old / "config.json").read_text())
    for section, name in (("data", "label_format"), ("data", "palette"), ("model", "classes"),
                          ("model", "class_weights")):
        del config["config"][section][name]
    config["config"]["model"]["num_classes"] = 3
    del config["labels"]
    assert "class_names" not in config["model"]     # pet runs keep the model config of old
    (old / "config.json").write_text(json.dumps(config))
    epochs = len(json.loads((old / "history.json").read_text())["epochs"])
    resumed = run_command("train.py", "--resume", "--save-dir", old, "--epochs", epochs + 1)
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((old / "history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 2))
