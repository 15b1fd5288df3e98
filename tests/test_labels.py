"""datasets/labels.py: the three mask formats, auto detection, palettes, and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from imagefiles import jpeg, noise, paletted_png, png, rgb_png

from common.errors import ConfigError, DataError
from datasets.data import read_data
from datasets.examples import list_examples
from datasets.labels import (TRIMAP, VOC_IGNORE_COLOR, VOC_PALETTE_FILE, DataFormatError,
                             LabelFormat, Palette, decode_mask, default_palette,
                             detect_label_format, mask_to_label, read_palette_file, voc_colormap)
from datasets.loading import load_label
from datasets.utils import crop_shape, padding
from datasets.validation import validate_examples

# The same four scenes in every format: (name, height, width, animal class). Cat names are
# capitalised Oxford breeds, dog names lower-case ones, so the trimaps class them right.
SCENES = [("Bengal_1", 21, 26, 1), ("beagle_2", 30, 17, 2), ("Sphynx_3", 36, 40, 1),
          ("pug_4", 25, 33, 2)]
VOC3 = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 255: VOC_IGNORE_COLOR}


def scene_label(height: int, width: int, animal: int) -> np.ndarray:
    """(h, w) uint8: background 0, the animal (a rectangle) `animal`, a one-pixel 255 band."""
    label = np.zeros((height, width), np.uint8)
    label[height // 4:3 * height // 4, width // 5:4 * width // 5] = 255
    label[height // 4 + 1:3 * height // 4 - 1, width // 5 + 1:4 * width // 5 - 1] = animal
    return label


def encode(label: np.ndarray, animal: int, how: str) -> bytes:
    """The mask file of a label in one format."""
    if how == "trimap":
        trimap = np.select([label == 0, label == 255], [2, 3], default=1).astype(np.uint8)
        return png(trimap)
    if how == "index":
        return png(label)
    if how == "palette-rgb":
        rgb = np.zeros(label.shape + (3,), np.uint8)
        for value, colour in VOC3.items():
            rgb[label == value] = colour
        return rgb_png(rgb)
    assert how == "palette-indexed"
    return paletted_png(label, VOC3)


def write_scenes(root: Path, how: str, scenes=SCENES) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (name, height, width, animal) in enumerate(scenes):
        (root / "images" / f"{name}.jpg").write_bytes(jpeg(noise(height, width, i)))
        (root / "masks" / f"{name}.png").write_bytes(
            encode(scene_label(height, width, animal), animal, how))
    return root


def test_trimap_index_and_palette_masks_of_the_same_scenes_give_identical_labels(tmp_path):
    expected = np.stack([padding(crop_shape(scene_label(h, w, animal), (32, 32)), (32, 32))
                         for _, h, w, animal in sorted(SCENES)])   # readers sort by name
    assert set(np.unique(expected)) == {0, 1, 2, 255}
    for how in ("trimap", "index", "palette-rgb", "palette-indexed"):
        folder = write_scenes(tmp_path / how, how)
        _, labels = read_data(folder, (32, 32), label_format="auto")
        np.testing.assert_array_equal(labels, expected, err_msg=how)


@pytest.mark.parametrize("how, kind", [("trimap", "trimap"), ("index", "index"),
                                       ("palette-rgb", "palette"),
                                       ("palette-indexed", "palette")])
def test_auto_picks_the_format_of_each_folder(tmp_path, how, kind):
    folder = write_scenes(tmp_path, how)
    decided, reason = detect_label_format(sorted((folder / "masks").iterdir()))
    assert decided == kind, reason


def test_a_paletted_mask_of_gray_colours_is_still_a_palette_mask(tmp_path):
    # The colour type of the PNG decides, not its colours: a gray palette is still a palette.
    folder = write_scenes(tmp_path, "index")
    gray = {v: (v, v, v) for v in (0, 1, 2, 255)}
    for name, h, w, animal in SCENES:
        (folder / "masks" / f"{name}.png").write_bytes(
            paletted_png(scene_label(h, w, animal), gray))
    assert detect_label_format(sorted((folder / "masks").iterdir()))[0] == "palette"


def test_trimap_values_with_names_that_are_not_pets_are_ambiguous_and_ask_for_the_option(
        tmp_path):
    scenes = [(f"IMG_{i}", h, w, a) for i, (_, h, w, a) in enumerate(SCENES)]
    folder = write_scenes(tmp_path, "trimap", scenes)
    with pytest.raises(ConfigError, match=r"only the values \[1, 2, 3\].*--label-format trimap"):
        detect_label_format(sorted((folder / "masks").iterdir()))


def test_masks_of_mixed_formats_among_the_first_ones_are_refused_naming_both(tmp_path):
    folder = write_scenes(tmp_path, "index")
    name, h, w, animal = SCENES[2]
    (folder / "masks" / f"{name}.png").write_bytes(
        encode(scene_label(h, w, animal), animal, "palette-rgb"))
    with pytest.raises(DataFormatError, match=r"mix formats: .*Sphynx_3\.png is a colour .*"
                                              r"Bengal_1\.png has one channel"):
        detect_label_format(sorted((folder / "masks").iterdir()))


def test_a_mask_whose_format_differs_from_the_folder_is_refused_when_read(tmp_path):
    # Beyond auto's sample: every reader checks each mask's layout against the format.
    index = LabelFormat("index", ("background", "cat", "dog"))
    palette = LabelFormat("palette", ("background", "cat", "dog"), default_palette(3))
    folder = write_scenes(tmp_path / "index", "index")
    name, h, w, animal = SCENES[1]
    (folder / "masks" / f"{name}.png").write_bytes(
        encode(scene_label(h, w, animal), animal, "palette-indexed"))
    examples = list_examples(folder, label_format=index)
    with pytest.raises(DataFormatError, match=r"beagle_2\.png has 3 channels with different "
                                              r"contents \(a colour or palette mask\), but the "
                                              r"masks of this folder are read as index masks"):
        validate_examples(examples, label_format=index)
    colour = write_scenes(tmp_path / "palette", "palette-rgb")
    (colour / "masks" / f"{name}.png").write_bytes(png(scene_label(h, w, animal)))
    (example,) = [e for e in list_examples(colour, label_format=palette) if e.stem == name]
    with pytest.raises(DataFormatError, match=r"beagle_2\.png has 1 channel\(s\), but the masks "
                                              r"of this folder are read as palette masks"):
        load_label(example, label_format=palette)


def test_an_index_at_or_above_the_class_count_is_refused_naming_the_file_and_the_values(
        tmp_path):
    folder = write_scenes(tmp_path, "index")
    name, h, w, animal = SCENES[3]
    label = scene_label(h, w, animal)
    label[0, :3] = (3, 7, 7)
    (folder / "masks" / f"{name}.png").write_bytes(png(label))
    with pytest.raises(DataFormatError, match=r"pug_4\.png has values \[3, 7\] outside the 3 "
                                              r"classes 0\.\.2 \(background, cat, dog\)"):
        read_data(folder, (32, 32), label_format="index")


def test_a_palette_colour_not_in_the_table_is_refused_naming_the_file_and_the_colour(tmp_path):
    folder = write_scenes(tmp_path, "palette-rgb")
    name, h, w, animal = SCENES[0]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[2:4, 2:5] = (10, 20, 30)                 # 6 pixels of a colour the table lacks
    (folder / "masks" / f"{name}.png").write_bytes(rgb_png(rgb))
    with pytest.raises(DataFormatError, match=r"Bengal_1\.png has 1 colour\(s\) that are not in "
                                              r"the palette .*: \[10, 20, 30\] \(6 px\)"):
        read_data(folder, (32, 32), label_format="palette")


def test_index_masks_of_16_bits_or_three_equal_channels_are_read_as_indices():
    names = ("background", "a", "b", "c")
    label = np.array([[0, 1, 2], [3, 255, 0]], np.uint8)
    index = LabelFormat("index", names)
    for data in (png(label.astype(np.uint16)), png(np.dstack([label] * 3))):
        mask = decode_mask(data, "m.png", index)
        got = mask_to_label(mask, index, "m.png")
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, label)


def test_a_transparent_palette_entry_keeps_its_colour():
    # A tRNS chunk makes OpenCV return 4 channels; the colour decides, the alpha is dropped.
    indices = np.array([[0, 1], [2, 255]], np.uint8)
    fmt = LabelFormat("palette", ("background", "cat", "dog"), default_palette(3))
    mask = decode_mask(paletted_png(indices, VOC3, transparent=0), "t.png", fmt)
    assert mask.shape == (2, 2, 3)
    np.testing.assert_array_equal(mask_to_label(mask, fmt, "t.png"), indices)


def test_trimap_labels_take_the_class_of_the_name():
    trimap = np.array([[1, 2, 3]], np.uint8)
    np.testing.assert_array_equal(mask_to_label(trimap, TRIMAP, "x", foreground_class=2),
                                  [[2, 0, 255]])
    with pytest.raises(DataFormatError, match=r"values \[0\] outside the trimap values"):
        mask_to_label(np.array([[0, 1]], np.uint8), TRIMAP, "x", foreground_class=1)


def test_the_voc_palette_file_holds_the_voc_classes_and_their_standard_colours():
    voc = read_palette_file(VOC_PALETTE_FILE)
    assert len(voc.class_names) == 21 and voc.class_names[0] == "background"
    by_name = dict(zip(voc.class_names, voc.colors))
    # Colours as Pascal VOC's devkit draws them (RGB).
    assert by_name["background"] == (0, 0, 0)
    assert by_name["aeroplane"] == (128, 0, 0)
    assert by_name["cat"] == (64, 0, 0)
    assert by_name["dog"] == (64, 0, 128)
    assert by_name["person"] == (192, 128, 128)
    assert by_name["tvmonitor"] == (0, 64, 128)
    assert voc.ignore_colors == ((224, 224, 192),)
    assert voc.colors == voc_colormap(21)       # the file is the colour map, class for class


def test_the_voc_palette_file_ships_with_the_package():
    setup = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"datasets": ["palettes/*.json"]' in setup
    assert VOC_PALETTE_FILE.parent.name == "palettes" and VOC_PALETTE_FILE.is_file()


@pytest.mark.parametrize("document, fragment", [
    ({"colors": [[0, 0, 0], [0, 0, 0]]}, r"colour \[0, 0, 0\] is given twice"),
    ({"colors": [[0, 0, 0], [1, 2, 3]], "ignore_colors": [[1, 2, 3]]}, "given twice"),
    ({"colors": [[0, 0, 0], [1, 2, 300]]}, r"3 integers in \[0, 255\]"),
    ({"colors": [[0, 0, 0]]}, "between 2 and 254 class colours"),
    ({"classes": ["a", "b", "c"], "colors": [[0, 0, 0], [1, 1, 1]]}, "3 class names for 2"),
    ({"classes": ["a"]}, 'a "colors" list'),
])
def test_a_malformed_palette_file_is_refused_naming_it(tmp_path, document, fragment):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=fragment) as caught:
        read_palette_file(path)
    assert "mine.json" in str(caught.value)


def test_an_unreadable_palette_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.json not found"):
        read_palette_file(tmp_path / "nowhere.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json is not readable JSON"):
        read_palette_file(tmp_path / "bad.json")


def test_a_label_format_round_trips_through_json():
    palette = Palette(colors=((0, 0, 0), (9, 9, 9), (200, 0, 0)), ignore_colors=((1, 1, 1),),
                      class_names=("bg", "x", "y"), source="p.json")
    for fmt in (TRIMAP, LabelFormat("index", ("background", "a", "b", "c")),
                LabelFormat("palette", ("background", "x", "y"), palette)):
        again = LabelFormat.from_dict(json.loads(json.dumps(fmt.to_dict())), source="t")
        assert again == fmt and hash(again) == hash(fmt)


def test_a_label_format_refuses_what_cannot_be_read():
    with pytest.raises(ConfigError, match="trimap masks hold 3 classes"):
        LabelFormat("trimap", ("background", "cat", "dog", "bird"))
    with pytest.raises(ConfigError, match="has 3 class colours but there are 4 classes"):
        LabelFormat("palette", ("background", "a", "b", "c"), default_palette(3))
    with pytest.raises(ConfigError, match="palette masks need a palette"):
        LabelFormat("palette", ("background", "a"))
    with pytest.raises(ConfigError, match="one of trimap, index, palette"):
        LabelFormat("colour", ("background", "a"))
