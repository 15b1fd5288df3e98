"""Synthetic pets: exact pet layout, trimap structure, determinism, and no colour shortcut."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import ConfigError
from common.files import OutputExistsError
from datasets import synthetic, synthetic_dataset
from datasets.classes import IGNORE_LABEL, read_classes_file
from datasets.data import read_data
from datasets.examples import list_examples
from datasets.oxford import CAT_BREEDS, DOG_BREEDS
from datasets.split import seeded_split
from datasets.synthetic_dataset import MARKER_FILE, SyntheticReport, generate_pets
from datasets.synthetic_render import render_pet, render_scene


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> tuple[Path, SyntheticReport]:
    out = tmp_path_factory.mktemp("synthetic")
    report = generate_pets(out, num_images=40, test_fraction=0.25, min_size=60,
                           max_size=140, num_unlabeled=4, seed=3)
    return out, report


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_names_and_counts(pets):
    out, report = pets
    assert (report.num_train, report.num_test, report.num_unlabeled) == (30, 10, 4)
    for split, count in (("train", 30), ("test", 10)):
        images = sorted(p.name for p in (out / split / "images").iterdir())
        masks = sorted(p.name for p in (out / split / "masks").iterdir())
        assert len(images) == count
        assert [n[:-4] + ".png" for n in images] == masks
        for name in images:
            breed, index = re.fullmatch(r"(.+)_(\d+)\.jpg", name).groups()
            assert int(index) >= 1
            # Cats: capitalised breed names; dogs: lower-case ones (the class comes from this).
            assert breed in (CAT_BREEDS if breed[0].isupper() else DOG_BREEDS)
    unlabeled = sorted(p.name for p in (out / "unlabeled").iterdir())
    assert unlabeled == ["photo_000.jpg", "photo_001.jpg", "photo_002.PNG", "photo_003.jpg"]
    all_names = [p.name for s in ("train", "test") for p in (out / s / "images").iterdir()]
    assert len(set(all_names)) == 40
    cats = sum(n[0].isupper() for n in all_names)
    assert (cats, 40 - cats) == (report.num_cats, report.num_dogs)
    assert 0 < cats < 40


def test_trimaps_have_a_thin_unknown_band_between_animal_and_background(pets):
    out, _ = pets
    band_ratios = []
    for mask_path in sorted((out / "train" / "masks").iterdir()):
        trimap = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(out / "train" / "images" / (mask_path.stem + ".jpg")))
        assert trimap.dtype == np.uint8 and trimap.shape == image.shape[:2]
        assert set(np.unique(trimap)) == {1, 2, 3}, mask_path.name
        fg, bg = trimap == 1, trimap == 2
        # No animal pixel touches a background pixel (4-neighbourhood): the band separates them.
        assert not (fg[1:] & bg[:-1]).any() and not (fg[:-1] & bg[1:]).any()
        assert not (fg[:, 1:] & bg[:, :-1]).any() and not (fg[:, :-1] & bg[:, 1:]).any()
        band_ratios.append((trimap == 3).sum() / fg.sum())
    # ...and it is thin: a fraction of the animal's own area (2 px wide, so relatively wider on
    # the smallest images).
    assert max(band_ratios) < 1.0 and np.median(band_ratios) < 0.5, band_ratios


def test_sizes_vary_odd_even_and_around_the_crop_size(pets):
    out, _ = pets
    sides = [s for p in (out / "train" / "images").iterdir()
             for s in cv2.imread(str(p)).shape[:2]]
    assert min(sides) >= 60 and max(sides) <= 140
    assert any(s % 2 for s in sides) and any(s % 2 == 0 for s in sides)
    assert any(s < 100 for s in sides) and any(s > 100 for s in sides)


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, pets):
    out, _ = pets
    again = tmp_path / "again"
    generate_pets(again, num_images=40, test_fraction=0.25, min_size=60, max_size=140,
                  num_unlabeled=4, seed=3)
    assert _digest(again) == _digest(out)
    other = tmp_path / "other"
    generate_pets(other, num_images=40, test_fraction=0.25, min_size=60, max_size=140,
                  num_unlabeled=4, seed=4)
    assert set(_digest(other).values()).isdisjoint(_digest(out).values())


def test_read_data_loads_it_with_classes_from_the_names(pets):
    out, _ = pets
    images, labels, names = read_data(out / "train", (96, 96), return_names=True)
    assert images.shape == (30, 96, 96, 3) and labels.shape == (30, 96, 96)
    visible = 0
    for label, name in zip(labels, names):
        animal = 1 if name[0].isupper() else 2
        assert set(np.unique(label)) <= {0, animal, IGNORE_LABEL}, name
        visible += (label == animal).sum() > 0.05 * label.size
    assert visible >= 27  # the centre crop may cut most of an animal away, rarely
    unlabeled = list_examples(out / "unlabeled", no_label=True)
    assert len(unlabeled) == 4


def test_colour_alone_does_not_tell_cats_from_dogs():
    """The mean fur colour of an animal must not give its class away: a nearest-centroid
    classifier on it (fit on half, scored on the other half) stays near chance."""
    features, classes = [], []
    for index in range(200):
        rng = np.random.default_rng([11, index])
        species = "cat" if index % 2 else "dog"
        image, trimap = render_pet(rng, 96, 96, species)
        features.append(image[trimap == 1].reshape(-1, 3).mean(0))
        classes.append(index % 2)
    features, classes = np.array(features), np.array(classes)
    fit, score = slice(0, 100), slice(100, 200)
    centroids = np.stack([features[fit][classes[fit] == c].mean(0) for c in (0, 1)])
    distances = ((features[score][:, None] - centroids[None]) ** 2).sum(-1)
    accuracy = (distances.argmin(1) == classes[score]).mean()
    assert accuracy < 0.65, accuracy


def test_refuses_to_overwrite_and_rejects_bad_options(tmp_path):
    generate_pets(tmp_path, num_images=2, min_size=40, max_size=50)
    assert (tmp_path / MARKER_FILE).is_file()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        generate_pets(tmp_path, num_images=2, min_size=40, max_size=50)
    generate_pets(tmp_path, num_images=3, min_size=40, max_size=50, overwrite=True,
                  test_fraction=0.0)
    assert len(list((tmp_path / "train" / "images").iterdir())) == 3
    assert not list((tmp_path / "test" / "images").iterdir())
    with pytest.raises(ConfigError, match="min_size"):
        generate_pets(tmp_path / "x", min_size=50, max_size=40)
    with pytest.raises(ConfigError, match="test_fraction"):
        generate_pets(tmp_path / "x", test_fraction=1.0)
    assert not (tmp_path / "x").exists()


def test_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path):
    # Prepared real data in the pet layout (no marker): --overwrite must not delete it.
    real = tmp_path / "catdog"
    (real / "train" / "images").mkdir(parents=True)
    (real / "train" / "images" / "Bombay_1.jpg").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=rf"refusing to replace .*catdog: it has no "
                                                rf"{MARKER_FILE}"):
        generate_pets(real, num_images=2, min_size=40, max_size=50, overwrite=True)
    assert [p.name for p in real.rglob("*") if p.is_file()] == ["Bombay_1.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catdog"]  # no staging folder left


def test_the_new_set_is_built_aside_and_the_old_one_survives_a_failure(tmp_path, monkeypatch):
    out = tmp_path / "synthetic"
    generate_pets(out, num_images=2, min_size=40, max_size=50, seed=1)
    before = _digest(out)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(synthetic_dataset, "render_pet", fail)
    with pytest.raises(OSError, match="No space left"):
        generate_pets(out, num_images=2, min_size=40, max_size=50, seed=2,
                      overwrite=True)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]


def test_the_test_images_are_the_shared_seeded_split_of_the_names(pets):
    out, report = pets
    names = sorted(p.stem for split in ("train", "test")
                   for p in (out / split / "images").iterdir())
    _, held = seeded_split(names, 0.25, 3)
    assert sorted(p.stem for p in (out / "test" / "images").iterdir()) == held


def test_cli(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path), "--num-images", "5", "--test-fraction", "0.4",
                    "--num-unlabeled", "0", "--min-size", "40", "--max-size", "60"])
    assert "3 train, 2 test, 0 unlabeled" in capsys.readouterr().out
    with pytest.raises(OutputExistsError, match="--overwrite"):
        synthetic.main(["--out", str(tmp_path), "--num-images", "5"])


# -- multi-class scenes (index masks) -----------------------------------------------------------

@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, SyntheticReport]:
    out = tmp_path_factory.mktemp("scenes")
    report = generate_pets(out, num_images=16, test_fraction=0.25, min_size=60,
                           max_size=120, num_unlabeled=2, seed=5, num_classes=5)
    return out, report


def _read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.ndim == 2, path
    return mask


def test_scenes_have_neutral_names_index_masks_and_a_classes_file(scenes):
    out, report = scenes
    names = ("background", "cat", "dog", "bird", "fish")
    assert report.class_names == names
    assert (report.num_train, report.num_test, report.num_unlabeled) == (12, 4, 2)
    plan = dict((name, content) for content, name in synthetic_dataset._plan_scenes(16, 5, seed=5))
    assert sum(report.objects_per_class) == sum(len(c) for c in plan.values())
    for split in ("train", "test"):
        assert read_classes_file(out / split)["classes"] == names
        for image_path in sorted((out / split / "images").iterdir()):
            assert re.fullmatch(r"scene_\d{4}\.jpg", image_path.name)
            mask = _read_mask(out / split / "masks" / f"{image_path.stem}.png")
            image = cv2.imread(str(image_path))
            assert mask.shape == image.shape[:2]
            drawn = {names.index(species) for species in plan[image_path.stem]}
            # Every animal drawn is visible with its class index, and nothing else is there.
            assert set(np.unique(mask)) == {0, IGNORE_LABEL} | drawn, image_path.name
    assert len(list((out / "unlabeled").iterdir())) == 2


def test_scene_classes_never_touch_without_an_ignored_outline_between(scenes):
    out, _ = scenes
    for mask_path in sorted((out / "train" / "masks").iterdir()):
        mask = _read_mask(mask_path)
        for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1], mask[1:])):   # 4-neighbours
            labelled = (a != IGNORE_LABEL) & (b != IGNORE_LABEL)
            assert np.array_equal(a[labelled], b[labelled]), mask_path.name


def test_two_animal_scene_by_hand():
    rng = np.random.default_rng(1)
    image, mask = render_scene(rng, 80, 120, [("rabbit", 5), ("snake", 6)])
    assert image.shape == (80, 120, 3) and image.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 5, 6, IGNORE_LABEL}
    # The image is cut across its width: the rabbit lives in the left window, the snake in the
    # right one (each window is at most 55% + 5% of the width).
    assert np.argwhere(mask == 5)[:, 1].max() < 0.6 * 120
    assert np.argwhere(mask == 6)[:, 1].min() >= 0.4 * 120
    with pytest.raises(ValueError, match="unknown species 'lion'"):
        render_scene(rng, 80, 80, [("lion", 1)])


def test_scenes_are_deterministic_and_bad_class_counts_are_refused(tmp_path, scenes):
    out, _ = scenes
    generate_pets(tmp_path / "again", num_images=16, test_fraction=0.25, min_size=60,
                  max_size=120, num_unlabeled=2, seed=5, num_classes=5)
    assert _digest(tmp_path / "again") == _digest(out)
    for bad in (1, 8):
        with pytest.raises(ValueError, match=r"num_classes must be in \[2, 7\]"):
            generate_pets(tmp_path / "bad", num_images=2, num_classes=bad)
    assert not (tmp_path / "bad").exists()


def test_cli_writes_scenes_with_num_classes(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path), "--num-images", "4", "--test-fraction", "0.25",
                    "--num-unlabeled", "0", "--min-size", "64", "--max-size", "64",
                    "--num-classes", "3"])
    printed = capsys.readouterr().out
    assert "3 train, 1 test, 0 unlabeled; 3 classes (background, cat, dog), index masks" in printed
    assert read_classes_file(tmp_path / "train")["classes"] == ("background", "cat", "dog")
