"""random_flip_scale_crop: exact flips, label values, identical geometry, determinism."""
import numpy as np
import pytest

from datasets.augment import random_flip_scale_crop

H, W = 40, 60


def coordinate_image():
    """uint8 image whose channel 0 is 4*x and channel 1 is 4*y: bilinear resampling reproduces a
    linear ramp exactly, so the output tells, to 1/8 pixel, which input point each output pixel
    was sampled at."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([4 * xx, 4 * yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)


def random_label(seed=0):
    """Per-pixel random classes (no smooth regions): any misplaced nearest sample shows up."""
    return np.random.default_rng(seed).choice(np.array([0, 1, 2, 255], np.uint8), size=(H, W))


def misplaced_label_pixels(image_out, label_out, label_in):
    """Compare the label to the input label at the point the *image* sampled.

    Returns (number of mismatches, number of pixels checked). Pixels whose decoded source point
    lies within 0.3 px of a half-pixel boundary are not checked: the ramp's uint8 rounding
    (+-0.125 px) leaves their nearest input pixel ambiguous.
    """
    xs = image_out[..., 0] / 4.0
    ys = image_out[..., 1] / 4.0
    rx, ry = np.round(xs), np.round(ys)
    checked = (np.abs(xs - rx) < 0.3) & (np.abs(ys - ry) < 0.3)
    expected = label_in[ry.astype(int), rx.astype(int)]
    return int(((label_out != expected) & checked).sum()), int(checked.sum())


def test_flip_only_is_exact_and_identity_is_exact():
    image, label = coordinate_image(), random_label()
    rng = np.random.default_rng(0)
    flipped_image, flipped_label = random_flip_scale_crop(image, label, rng, max_scale=1.0,
                                                          flip_prob=1.0)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    np.testing.assert_array_equal(flipped_label, label[:, ::-1])
    same_image, same_label = random_flip_scale_crop(image, label, rng, max_scale=1.0,
                                                    flip_prob=0.0)
    np.testing.assert_array_equal(same_image, image)
    np.testing.assert_array_equal(same_label, label)


def test_label_follows_the_image_geometry_exactly():
    image, label = coordinate_image(), random_label()
    flips, total_checked = 0, 0
    for seed in range(12):
        image_out, label_out = random_flip_scale_crop(image, label, np.random.default_rng(seed),
                                                      max_scale=2.0)
        assert image_out.shape == (H, W, 3) and image_out.dtype == np.uint8
        assert label_out.shape == (H, W) and label_out.dtype == np.uint8
        mismatches, checked = misplaced_label_pixels(image_out, label_out, label)
        assert mismatches == 0, f"seed {seed}: {mismatches} label pixels off the image geometry"
        assert checked > 0.4 * H * W
        total_checked += checked
        flips += image_out[0, 0, 0] > image_out[0, -1, 0]  # x decreases to the right: flipped
        # The transform really zooms: the sampled span is narrower than the input.
        assert np.ptp(image_out[..., 0]) < 4 * (W - 1)
    assert 0 < flips < 12  # both branches were exercised

    # The checker is not vacuous: a label off by one pixel, or not flipped with its image, fails.
    image_out, label_out = random_flip_scale_crop(image, label, np.random.default_rng(1),
                                                  max_scale=1.2, flip_prob=1.0)
    assert misplaced_label_pixels(image_out, np.roll(label_out, 1, axis=1), label)[0] > 100
    assert misplaced_label_pixels(image_out, label_out[:, ::-1], label)[0] > 100


def test_labels_keep_their_values_and_ignore_stays_ignore():
    label = np.full((H, W), 255, np.uint8)
    label[10:30, 15:45] = 2
    label[18:22, :] = 0
    image = np.zeros((H, W, 3), np.uint8)
    for seed in range(10):
        _, out = random_flip_scale_crop(image, label, np.random.default_rng(seed), max_scale=1.7)
        assert set(np.unique(out).tolist()) <= {0, 2, 255}
        assert (out == 255).any()


def test_deterministic_under_a_seeded_generator():
    image, label = coordinate_image(), random_label()
    a = random_flip_scale_crop(image, label, np.random.default_rng(5))
    b = random_flip_scale_crop(image, label, np.random.default_rng(5))
    c = random_flip_scale_crop(image, label, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_images_without_labels_and_other_channel_counts():
    gray = coordinate_image()[..., :1]
    out, label = random_flip_scale_crop(gray, None, np.random.default_rng(0))
    assert label is None and out.shape == (H, W, 1) and out.dtype == np.uint8


def test_bad_arguments_are_named():
    image, label = coordinate_image(), random_label()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_scale"):
        random_flip_scale_crop(image, label, rng, max_scale=0.9)
    with pytest.raises(ValueError, match="flip_prob"):
        random_flip_scale_crop(image, label, rng, flip_prob=1.5)
    with pytest.raises(ValueError, match="label shape"):
        random_flip_scale_crop(image, label[:-1], rng)
    with pytest.raises(ValueError, match="uint8"):
        random_flip_scale_crop(image.astype(np.float32), label, rng)
