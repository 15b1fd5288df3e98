"""crop_shape / padding: exact pixels on hand-made arrays (expected values written out by hand)."""
import numpy as np
import pytest

from datasets.utils import as_size, crop_shape, padding


def fit(array, size, fill):
    return padding(crop_shape(array, size), size, fill=fill)


def test_even_sides_larger_are_centre_cropped():
    a = np.arange(6 * 8).reshape(6, 8)
    np.testing.assert_array_equal(crop_shape(a, (2, 4)), [[18, 19, 20, 21],
                                                          [26, 27, 28, 29]])


def test_odd_sides_lose_their_first_row_and_column_then_centre_crop():
    a = np.arange(5 * 7).reshape(5, 7)
    # 5x7 -> drop row 0 and column 0 -> 4x6 (rows 1..4, cols 1..6) -> centre 2x2.
    np.testing.assert_array_equal(crop_shape(a, (2, 2)), [[17, 18],
                                                          [24, 25]])


def test_odd_sides_smaller_than_target_still_lose_their_first_row_and_column():
    a = np.arange(3 * 5).reshape(3, 5)
    np.testing.assert_array_equal(fit(a, (4, 8), fill=-1), [
        [-1, -1, -1, -1, -1, -1, -1, -1],
        [-1, -1, 6, 7, 8, 9, -1, -1],
        [-1, -1, 11, 12, 13, 14, -1, -1],
        [-1, -1, -1, -1, -1, -1, -1, -1],
    ])


def test_one_side_larger_one_side_smaller():
    a = np.arange(4 * 10).reshape(4, 10)
    np.testing.assert_array_equal(fit(a, (6, 6), fill=99), [
        [99, 99, 99, 99, 99, 99],
        [2, 3, 4, 5, 6, 7],
        [12, 13, 14, 15, 16, 17],
        [22, 23, 24, 25, 26, 27],
        [32, 33, 34, 35, 36, 37],
        [99, 99, 99, 99, 99, 99],
    ])


def test_odd_crop_excess_removes_the_extra_row_and_column_at_the_end():
    a = np.arange(6 * 6).reshape(6, 6)
    # Excess 3 per axis: 1 row/column removed at the top/left, 2 at the bottom/right.
    np.testing.assert_array_equal(crop_shape(a, (3, 3)), [[7, 8, 9],
                                                          [13, 14, 15],
                                                          [19, 20, 21]])
    b = np.arange(7 * 7).reshape(7, 7)
    # 7 is odd: drop the first row/column (6 left, rows/cols 1..6), then excess 3 -> start 1+1.
    np.testing.assert_array_equal(crop_shape(b, (3, 3)), [[16, 17, 18],
                                                          [23, 24, 25],
                                                          [30, 31, 32]])


def test_odd_padding_puts_the_extra_row_and_column_at_the_end():
    a = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    out = padding(a, (5, 5))
    np.testing.assert_array_equal(out, [[0, 0, 0, 0, 0],
                                        [0, 1, 2, 0, 0],
                                        [0, 3, 4, 0, 0],
                                        [0, 0, 0, 0, 0],
                                        [0, 0, 0, 0, 0]])
    assert out.dtype == np.uint8


def test_three_dimensional_arrays_keep_their_channels():
    image = np.zeros((3, 4, 3), dtype=np.uint8)
    image[..., 0] = np.arange(12).reshape(3, 4)
    image[..., 1] = 100 + np.arange(12).reshape(3, 4)
    image[..., 2] = 200
    out = fit(image, (4, 2), fill=0)
    # Height 3 -> rows 1..2, padded to 4 (1 above, 1 below); width 4 -> cols 1..2.
    assert out.shape == (4, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[0, 0], [5, 6], [9, 10], [0, 0]])
    np.testing.assert_array_equal(out[..., 1], [[0, 0], [105, 106], [109, 110], [0, 0]])
    np.testing.assert_array_equal(out[..., 2], [[0, 0], [200, 200], [200, 200], [0, 0]])


def test_exact_size_is_unchanged_crop_is_a_view_padding_a_copy():
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    cropped = crop_shape(a, (2, 2))
    assert np.shares_memory(cropped, a)
    padded = padding(a, (4, 4))
    np.testing.assert_array_equal(padded, a)
    assert not np.shares_memory(padded, a)


@pytest.mark.parametrize("size", [(4,), (4, 4, 4), (0, 4), (4, -1), (4.0, 4), (True, 4), "44",
                                  None])
def test_bad_sizes_are_named(size):
    with pytest.raises((TypeError, ValueError), match=r"two positive integers"):
        crop_shape(np.zeros((4, 4)), size)


def test_as_size_accepts_numpy_ints():
    assert as_size(np.array([3, 5])) == (3, 5)


def test_padding_refuses_to_shrink_and_unrepresentable_fills():
    with pytest.raises(ValueError, match="crop_shape"):
        padding(np.zeros((5, 3)), (4, 4))
    with pytest.raises(ValueError, match="not representable"):
        padding(np.zeros((2, 2), np.uint8), (4, 4), fill=-1)
    with pytest.raises(ValueError, match="2-D"):
        crop_shape(np.zeros(4), (2, 2))
