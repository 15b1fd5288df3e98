"""Batched full-resolution inference (learning/inference.py): batches, exact masks, skips, writes.

A recording fake model checks the batching (no TensorFlow); a tiny random GCN checks that the
batched masks are exactly `predict_image`'s.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.examples import Example, list_examples
from datasets.loading import load_image, load_label
from datasets.synthetic_dataset import generate_pets
from learning.inference import (
    DrawingWriter,
    Prediction,
    SizeBatcher,
    TestScores,
    pad_batch,
    plan_batches,
    predict_and_draw,
    predict_examples,
)
from learning.utils import DEFAULT_COLORS, draw_pixel, write_prediction
from models.inference_options import InferenceOptions

# (h, w) of the test images; padded sizes: 64x96, 64x64, 96x96, 64x96, 128x64, 64x64, 64x96
SIZES = [(50, 70), (64, 64), (65, 90), (40, 66), (100, 40), (33, 33), (64, 96)]


class RecordingModel:
    """Stands in for a SegNet: mask = (red channel // 64) % 3, so every pixel's class depends
    on its own value only; records the shape of every batch and the calling thread."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []
        self.threads: set[str] = set()

    def predict(self, images, batch_size=8, output="probs"):
        assert output == "mask" and batch_size == len(images)
        self.batches.append(images.shape)
        self.threads.add(threading.current_thread().name)
        return ((images[..., 0] // 64) % 3).astype(np.uint8)


def full(batch_size: int) -> InferenceOptions:
    """The mode RecordingModel stands in for (it returns masks only)."""
    return InferenceOptions(mode="full", batch_size=batch_size)


def write_images(folder: Path, sizes=SIZES) -> list[Example]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    examples = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img_{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        examples.append(Example(path.name, str(path)))
    return examples


def test_size_batcher_groups_equal_keys_and_flushes_the_largest_group_when_full():
    batcher = SizeBatcher(batch_size=2, max_buffered=3)
    assert batcher.add("a", 0) == []
    assert batcher.add("b", 1) == []
    assert batcher.add("a", 2) == [[0, 2]]           # a full group
    assert batcher.add("c", 3) == []
    assert batcher.add("d", 4) == []                 # b, c, d wait: 3 items, not more
    assert batcher.add("c", 5) == [[3, 5]]           # full
    assert batcher.add("e", 6) == []
    assert batcher.add("f", 7) == [[1]]              # 4 waiting > 3: first of the largest (b)
    assert batcher.flush() == [[4], [6], [7]]        # in order of first arrival
    assert batcher.flush() == []


def test_pad_batch_centres_each_image_like_predict_image():
    a = np.full((50, 70, 3), 7, np.uint8)
    b = np.full((64, 90, 3), 9, np.uint8)
    batch, offsets = pad_batch([a, b])
    assert batch.shape == (2, 64, 96, 3) and offsets == [(7, 13), (0, 3)]
    assert batch[0, 7:57, 13:83].min() == 7 and batch[0].sum() == 7 * a.size
    assert batch[1, :, 3:93].min() == 9 and batch[1].sum() == 9 * b.size
    with pytest.raises(ValueError, match="pads to 96x96"):
        pad_batch([a, np.zeros((70, 70, 3), np.uint8)])


def test_batches_group_images_by_padded_size_and_masks_are_cropped_back(tmp_path):
    examples = write_images(tmp_path / "images")
    model = RecordingModel()
    predictions = list(predict_examples(model, examples, options=full(2)))
    # Arrival order 0..6, keys 64x96, 64x64, 96x96, 64x96 (-> batch [0, 3]), 128x64, 64x64
    # (-> [1, 5]), 64x96; flush: 96x96 [2], 128x64 [4], 64x96 [6].
    assert [p.index for p in predictions] == [0, 3, 1, 5, 2, 4, 6]
    assert model.batches == [(2, 64, 96, 3), (2, 64, 64, 3), (1, 96, 96, 3), (1, 128, 64, 3),
                             (1, 64, 96, 3)]
    assert plan_batches(SIZES, 2) == [[0, 3], [1, 5], [2], [4], [6]]
    assert model.threads == {threading.current_thread().name}   # the model runs right here
    for p in predictions:
        image = load_image(examples[p.index].image_path)
        assert p.name == f"img_{p.index}.png" and p.label is None
        np.testing.assert_array_equal(p.image, image)
        np.testing.assert_array_equal(p.mask, (image[..., 0] // 64) % 3)


def test_an_undecodable_file_is_skipped_with_a_warning_and_counted(tmp_path, caplog):
    examples = write_images(tmp_path / "images", SIZES[:3])
    broken = tmp_path / "images" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    empty = tmp_path / "images" / "empty.png"
    empty.write_bytes(b"")
    examples = [examples[0], Example("broken.jpg", str(broken)), examples[1],
                Example("empty.png", str(empty)), examples[2]]
    skipped: list = []
    with caplog.at_level(logging.WARNING, logger="learning.inference"):
        predictions = list(predict_examples(RecordingModel(), examples, options=full(4),
                                            skipped=skipped))
    assert sorted(p.name for p in predictions) == ["img_0.png", "img_1.png", "img_2.png"]
    assert [name for name, _ in skipped] == ["broken.jpg", "empty.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "broken.jpg" in warnings[0] and "empty.png" in warnings[1]


def test_labels_come_at_full_resolution_with_their_images(tmp_path):
    generate_pets(tmp_path, num_images=5, test_fraction=0.0, min_size=40, max_size=90, seed=2)
    examples = list_examples(tmp_path / "train")
    predictions = list(predict_examples(RecordingModel(), examples, options=full(3),
                                        with_labels=True))
    assert sorted(p.index for p in predictions) == list(range(5))
    for p in predictions:
        example = examples[p.index]
        np.testing.assert_array_equal(p.label, load_label(example, p.image.shape[:2]))
        assert p.label.shape == p.image.shape[:2] == p.mask.shape


def test_batched_masks_equal_predict_image_exactly(tmp_path):
    from tiny import ContextSegNet, tiny_model

    # Its outputs depend on the padded frame's size and on the padding's offset, everywhere.
    model = tiny_model(seed=0, cls=ContextSegNet)
    # Random weights large enough that the masks are not one class everywhere.
    model.keras_model.set_weights([np.random.default_rng(i).normal(0, 50, w.shape)
                                   .astype(np.float32)
                                   for i, w in enumerate(model.keras_model.get_weights())])
    examples = write_images(tmp_path / "images")
    predictions = list(predict_examples(model, examples, options=full(3)))
    assert len(predictions) == len(SIZES)
    classes = set()
    for p in predictions:
        expected = model.predict_image(load_image(examples[p.index].image_path), output="mask",
                                       options=full(3))
        np.testing.assert_array_equal(p.mask, expected)
        classes |= set(np.unique(p.mask).tolist())
    assert len(classes) >= 2


def test_drawing_writer_writes_what_write_prediction_writes(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (20, 30)).astype(np.uint8)
    colors = {1: (10, 200, 30), 2: (250, 0, 100)}
    with DrawingWriter(tmp_path / "out", colors=colors, alpha=0.4, mask_dir=tmp_path / "m",
                       threads=2, max_pending=1) as writer:
        writer.submit("a.png", image, mask)
        writer.submit("b.png", image, mask)
    assert writer.num_written == 2
    write_prediction(tmp_path / "ref", "a.png", image, mask, alpha=0.4, colors=colors)
    for name in ("a.png", "b.png"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / "a.png").read_bytes()
        drawn = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / name)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(drawn, draw_pixel(image, mask, alpha=0.4, colors=colors))
        np.testing.assert_array_equal(
            cv2.imread(str(tmp_path / "m" / name), cv2.IMREAD_UNCHANGED), mask)


def test_a_failed_write_is_raised_not_lost(tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the output folder should be")
    image = np.zeros((4, 4, 3), np.uint8)
    writer = DrawingWriter(tmp_path / "not-a-folder", colors=DEFAULT_COLORS)
    writer.submit("a.png", image, np.zeros((4, 4), np.uint8))
    with pytest.raises(OSError):
        writer.close()


def test_predict_and_draw_calls_back_per_image_and_draws_each_one(tmp_path):
    examples = write_images(tmp_path / "images", SIZES[:4])
    seen = []
    result = predict_and_draw(RecordingModel(), examples, out_dir=tmp_path / "draws",
                              colors=DEFAULT_COLORS, mask_dir=tmp_path / "draws" / "masks",
                              options=full(2), on_prediction=lambda p: seen.append(p.name))
    assert sorted(seen) == [e.name for e in examples]
    assert result.num_predicted == result.num_drawn == 4 and result.skipped == []
    for example in examples:
        image = load_image(example.image_path)
        drawn = cv2.cvtColor(cv2.imread(str(tmp_path / "draws" / example.name)),
                             cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(drawn, draw_pixel(image, (image[..., 0] // 64) % 3))
    nothing = predict_and_draw(RecordingModel(), examples, out_dir=None, colors=DEFAULT_COLORS,
                               options=full(8))
    assert nothing.num_predicted == 4 and nothing.num_drawn == 0


def test_test_scores_by_hand_image_by_image_and_in_one_batch():
    labels = np.array([[[1, 1], [0, 255]], [[2, 2], [0, 0]]], np.uint8)
    masks = np.array([[[1, 2], [0, 0]], [[2, 2], [0, 0]]], np.uint8)
    by_image = TestScores(3, sheet_count=1)
    for i in range(2):
        by_image.add(Prediction(i, f"{i}.png", np.zeros((2, 2, 3), np.uint8), masks[i],
                                labels[i]))
    in_batch = TestScores(3)
    in_batch.update(labels, masks)
    for scores in (by_image, in_batch):
        result = scores.result("p", ["background", "cat", "dog"])
        # accuracies 2/3 and 1; confusion [[3,0,0],[0,1,1],[0,0,2]]; IoU 1, 1/2, 2/3.
        assert result["pixel_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
        assert result["confusion_matrix"] == [[3, 0, 0], [0, 1, 1], [0, 0, 2]]
        assert result["per_class_iou"] == pytest.approx(
            {"background": 1.0, "cat": 0.5, "dog": 2 / 3})
        assert result["mean_iou"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
        assert result["protocol"] == "p"
    assert by_image.sheet.ranked() == ([("1.png", 1.0)], [("0.png", pytest.approx(2 / 3))])


def test_an_image_over_the_pixel_limit_is_skipped_and_counted(tmp_path):
    examples = write_images(tmp_path / "images", [(50, 70), (100, 40), (33, 33)])
    skipped: list = []
    predictions = list(predict_examples(RecordingModel(), examples, max_pixels=3500,
                                        skipped=skipped, options=full(8)))
    # 50 * 70 = 3500 is at the limit, 100 * 40 = 4000 over it, 33 * 33 under.
    assert sorted(p.name for p in predictions) == ["img_0.png", "img_2.png"]
    assert [name for name, _ in skipped] == ["img_1.png"]


def test_the_writer_passes_class_names_and_the_legend_on(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (60, 80)).astype(np.uint8)
    names = ("background", "cat", "dog", "bird")
    colors = {1: (0, 102, 66), 2: (155, 10, 116), 3: (250, 200, 0)}
    with DrawingWriter(tmp_path / "out", colors=colors, class_names=names,
                       legend=True) as writer:
        writer.submit("a.png", image, mask)
    write_prediction(tmp_path / "ref", "a.png", image, mask, colors=colors, class_names=names,
                     legend=True)
    plain = write_prediction(tmp_path / "plain", "a.png", image, mask, colors=colors)
    assert (tmp_path / "out" / "a.png").read_bytes() == (tmp_path / "ref" / "a.png").read_bytes()
    assert (tmp_path / "out" / "a.png").read_bytes() != plain.read_bytes()
