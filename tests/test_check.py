"""datasets/check.py: the data check's numbers against hand counts, its warnings, its CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from imagefiles import jpeg, noise, png, rgb_png

from datasets import check
from datasets.examples import list_examples
from datasets.labels import DataFormatError, LabelFormat

NAMES = ("background", "car", "tree")


def write_pair(root: Path, name: str, mask_png: bytes, height: int, width: int) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    (root / "images" / f"{name}.jpg").write_bytes(jpeg(noise(height, width, len(name))))
    (root / "masks" / f"{name}.png").write_bytes(mask_png)


@pytest.fixture
def small(tmp_path) -> Path:
    """Three index masks whose pixels are counted by hand below."""
    a = np.zeros((4, 6), np.uint8)          # 24 px: 18 background, 4 car, 2 ignore
    a[0, :4] = 1
    a[3, 4:] = 255
    b = np.full((5, 5), 2, np.uint8)        # 25 px: 20 tree, 5 background
    b[2] = 0
    c = np.zeros((8, 3), np.uint8)          # 24 px: 24 background
    for name, mask in (("a", a), ("b", b), ("c", c)):
        write_pair(tmp_path, name, png(mask), *mask.shape)
    (tmp_path / "classes.json").write_text(json.dumps({"classes": list(NAMES)}))
    return tmp_path


def test_the_histogram_equals_a_hand_count_on_a_small_folder(small):
    report = check.check_folder(small, image_size=(5, 5))
    hist = report.histogram
    assert report.label_format.kind == "index" and report.label_format.class_names == NAMES
    assert hist.pixels.tolist() == [18 + 5 + 24, 4, 20]
    assert hist.images.tolist() == [3, 1, 1]
    assert (hist.ignored_pixels, hist.total_pixels, hist.num_images) == (2, 73, 3)
    assert dict(report.values) == {0: 47, 1: 4, 2: 20, 255: 2}
    # Against 5x5: a (4x6) is padded in height and cropped in width, b exact, c (8x3) both.
    assert report.size_counts() == {"exact": 1, "cropped": 0, "padded": 0, "both": 2}
    text = "\n".join(report.lines())
    # Shares of the 71 labelled pixels: 47 / 71 = 66.20%, 4 / 71 = 5.63%, 20 / 71 = 28.17%.
    assert "    0 background             47 px  66.20%  in 3 of 3 masks" in text
    assert "    1 car                     4 px   5.63%  in 1 of 3 masks" in text
    assert "    2 tree                   20 px  28.17%  in 1 of 3 masks" in text
    assert "ignored pixels: 2 (2.74% of all 73)" in text
    assert "pairs with problems: none" in text
    assert report.warnings() == []


def test_shares_are_of_the_labelled_pixels(small):
    shares = check.check_folder(small).histogram.shares()
    np.testing.assert_allclose(shares, [47 / 71, 4 / 71, 20 / 71])


def test_every_pixel_background_gives_a_loud_warning(tmp_path):
    # Masks saved as 0/255 (object = 255) read as index masks: everything left is background.
    for i in range(3):
        mask = np.zeros((6, 6), np.uint8)
        mask[1:4, 1:4] = 255
        write_pair(tmp_path, f"m{i}", png(mask), 6, 6)
    report = check.check_folder(tmp_path, label_format="index", num_classes=2)
    (warning,) = [w for w in report.warnings() if "EVERY" in w]
    assert "class 0 (background)" in warning and "predicts only background" in warning
    assert "0 (75.0%), 255 (25.0%)" in warning


def test_a_class_without_pixels_is_named_in_a_warning(small):
    report = check.check_folder(small, classes=("background", "car", "tree", "boat"))
    assert any("class(es) 3 boat have no pixel in the 3 checked masks" in w
               for w in report.warnings())


def test_problem_pairs_are_listed_and_the_check_goes_on(small):
    bad = np.zeros((4, 4), np.uint8)
    bad[0, 0] = 9
    write_pair(small, "d", png(bad), 4, 4)                 # an index >= 3
    write_pair(small, "e", png(np.zeros((3, 3), np.uint8)), 4, 4)   # mask of another size
    (small / "masks" / "f.png").write_bytes(b"")           # unreadable mask
    write_pair(small, "f", b"", 4, 4)
    report = check.check_folder(small)
    problems = dict(report.problems)
    assert set(problems) == {"d.jpg", "e.jpg", "f.jpg"}
    assert "values [9] outside the 3 classes" in problems["d.jpg"]
    assert "is 3x3 (HxW) but its image" in problems["e.jpg"]
    assert problems["f.jpg"].startswith("unreadable, would be skipped")
    assert report.histogram.num_images == 3               # a, b, c still counted
    assert report.values[9] == 1                           # the bad value is shown
    assert any("3 of the 6 checked pairs have problems" in w for w in report.warnings())
    with pytest.raises(DataFormatError, match=r"d\.png has values \[9\]"):
        check.check_examples(list_examples(small), report.label_format, strict=True)


def test_colours_are_counted_for_palette_masks(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (128, 0, 0)
    write_pair(tmp_path, "a", rgb_png(rgb), 2, 2)
    report = check.check_folder(tmp_path)
    assert report.label_format.kind == "palette"
    assert dict(report.values) == {(0, 0, 0): 3, (128, 0, 0): 1}
    assert report.histogram.pixels.tolist() == [3, 1, 0]


def test_a_sample_is_spread_over_the_sorted_names():
    examples = list(range(10))
    assert check.sample_examples(examples, 4) == [0, 3, 6, 9]
    assert check.sample_examples(examples, None) == examples
    assert check.sample_examples(examples, 20) == examples


def test_the_short_summary_states_the_sample(small):
    fmt = LabelFormat("index", NAMES)
    report = check.check_examples(list_examples(small), fmt, sample=2, image_size=(5, 5))
    lines = report.lines(short=True)
    assert report.checked == 2 and "checked a sample of 2" in lines[0]
    assert lines[2].startswith("class pixel shares: background")
    assert len(lines) == 4


def test_the_command_line_prints_the_report_and_the_warnings(small, capsys):
    assert check.main([str(small), "--image-size", "5", "--classes",
                       "background,car,tree,boat"]) == 0
    out = capsys.readouterr().out
    assert "label format: index masks" in out and "[auto: the first 3 masks" in out
    assert "mask values found (share of pixels): 0 (64.4%), 2 (27.4%), 1 (5.5%), 255 (2.7%)" \
        in out
    assert "at 5x5: 1 exact, 0 cropped, 0 padded with background, 2 cropped and padded" in out
    assert "WARNING: class(es) 3 boat have no pixel" in out
