"""make demo-check's table and make demo's stage clock, on hand-written inputs (no training)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location(
    "demo_quality", os.path.join(ROOT, "benchmarks", "demo_quality.py"))
demo_quality = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(demo_quality)


def _result(precision, seed, frame_iou, full_iou):
    return {"precision": precision, "seed": seed, "train_seconds": 99.6,
            "validation": {"epoch": 11, "epochs": 12, "mean_iou": 0.88888},
            "frame": {"pixel_accuracy": 0.97, "mean_iou": frame_iou},
            "full_resolution": {"pixel_accuracy": 0.96, "mean_iou": full_iou}}


def test_summary_names_the_precision_and_takes_min_median_max_per_column():
    lines = demo_quality.summary_rows([_result("fp32", 0, 0.9, 0.8), _result("bf16", 2, 0.7, 0.95),
                                       _result("fp32", 1, 0.8, 0.85)])
    assert lines[0] == ("| run | frames pixel acc. | frames mean IoU | full res pixel acc. "
                        "| full res mean IoU | best val. mean IoU (epoch) | train s |")
    # Markdown renders a table only when its delimiter row has the header's cell count.
    assert lines[1] == "|" + " --- |" * 7
    assert lines[2] == ("| float32 seed 0 | 0.9700 | 0.9000 | 0.9600 | 0.8000 | 0.8889 (11/12) "
                        "| 100 |")
    assert lines[3].startswith("| bfloat16 seed 2 |")
    assert lines[5:] == ["| **min** | 0.9700 | 0.7000 | 0.9600 | 0.8000 | | |",
                         "| **median** | 0.9700 | 0.8000 | 0.9600 | 0.8500 | | |",
                         "| **max** | 0.9700 | 0.9000 | 0.9600 | 0.9500 | | |"]


def test_recorded_results_take_the_recipes_runs_the_last_of_each_seed_in_order(tmp_path):
    recipe = {"DEMO_DATA_ARGS": "--num-images 9", "DEMO_TRAIN_ARGS": "--epochs 12"}
    mine = {"data_args": "--num-images 9", "train_args": "--epochs 12"}
    other = {"data_args": "--num-images 9", "train_args": "--epochs 16"}
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(row) + "\n" for row in (
        {**mine, **_result("bf16", 0, 0.9, 0.9)}, {**mine, **_result("fp32", 2, 0.1, 0.1)},
        {**other, **_result("fp32", 1, 0.5, 0.5)})))
    second.write_text(json.dumps({**mine, **_result("fp32", 2, 0.86, 0.87)}) + "\n")
    rows = demo_quality.recorded_results([str(first), str(second)], recipe)
    assert [(r["precision"], r["seed"], r["frame"]["mean_iou"]) for r in rows] == [
        ("fp32", 2, 0.86), ("bf16", 0, 0.9)]     # the 16-epoch row left out, seed 2's last
    with pytest.raises(SystemExit, match="no run of the recipe"):
        demo_quality.recorded_results([str(first)], {**recipe, "DEMO_TRAIN_ARGS": "--epochs 5"})


def test_best_validation_is_the_best_epochs_row(tmp_path):
    rows = [{"epoch": e, "steps": 114, "eval_accuracy": 0.9 + e / 100, "eval_mean_iou": e / 10}
            for e in (1, 2, 3)]
    (tmp_path / "history.json").write_text(json.dumps({"best_epoch": 2, "epochs": rows}))
    assert demo_quality.best_validation(str(tmp_path)) == {
        "epoch": 2, "epochs": 3, "steps": 342, "accuracy": 0.92, "mean_iou": 0.2}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_prints_each_stages_seconds_from_its_clock(tmp_path):
    clock = tmp_path / "stages.txt"
    clock.write_text("start 1000.00\ninstall 1050.40\ndata 1053.50\ntrain 1180.00\n"
                     "test 1195.20\ndraw 1205.30\n")
    out = subprocess.run(["make", "-s", "--no-print-directory", "demo-times",
                          f"DEMO_CLOCK={clock}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ("make demo took 205 s (3 min 25 s): install 50 s, data 3 s, "
                           "train 126 s, test 15 s, draw 10 s")


def test_the_caption_holds_the_machine_speed_reading_or_says_why_not(tmp_path):
    probe = tmp_path / "machine_speed.py"
    probe.write_text("print('loading...')\nprint(12.34)\n")
    assert demo_quality.machine_description(str(probe)).endswith(", machine_speed: 12.34")
    missing = str(tmp_path / "nowhere.py")
    assert demo_quality.machine_description(missing).endswith(
        f", machine_speed not run ({missing} not found; --machine-speed PATH)")
    assert "machine_speed" not in demo_quality.machine_description("")
