"""Memory per sample of ``read_data``: the original layout vs ours, measured side by side.

Both loaders read the same files in the same process, one after the other:

* original layout: what the TF1 tutorial built, re-created here from the spec: ``cv2.imread``
  BGR images and 3-channel masks, crop/pad, a Python list of per-example arrays, then
  ``np.array(..., float32)`` for the images and float32 one-hot labels with -1 on unknown pixels;
* ours: ``datasets.data.read_data`` (uint8 RGB images, uint8 index labels, preallocated output).

For each it reports the bytes of the returned arrays (``nbytes``) and the peak of Python-tracked
allocations while loading (``tracemalloc``; NumPy and OpenCV's output arrays are tracked), both
per sample, and the ratios original / ours.

    .venv/bin/python benchmarks/memory_read_data.py                  # 24 synthetic files
    .venv/bin/python benchmarks/memory_read_data.py --data-dir data/catdog/test --num 100

Without ``--data-dir`` it writes random images (sizes around 512, odd and even) and trimaps to a
temporary folder first.
"""
from __future__ import annotations

import argparse
import gc
import glob
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np

from datasets.data import read_data
from datasets.examples import list_examples
from datasets.oxford import TRIMAP_BACKGROUND, TRIMAP_FOREGROUND
from datasets.utils import crop_shape, padding


def write_random_split(root: str, num: int, seed: int) -> None:
    """``num`` JPEG images of random sizes in [380, 640) with random trimaps, pet layout."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    for i in range(num):
        height, width = (int(v) for v in rng.integers(380, 640, size=2))
        # Smooth content, so the JPEGs are of realistic size (noise would not compress).
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        trimap = rng.integers(1, 4, size=(height, width), dtype=np.uint8)
        name = f"Abyssinian_{i}" if i % 2 else f"beagle_{i}"
        cv2.imwrite(os.path.join(root, "images", f"{name}.jpg"), image)
        cv2.imwrite(os.path.join(root, "masks", f"{name}.png"), trimap)


def read_data_original_layout(data_dir: str, image_size: tuple[int, int], limit: int):
    """The original's output format and construction: float32 BGR (N, H, W, 3) and float32
    one-hot (N, H, W, 3) with -1 in every channel of an unknown pixel, collected in lists and
    converted with np.array at the end."""
    paths = sorted(glob.glob(os.path.join(data_dir, "images", "*.jpg")))[:limit]
    images, labels = [], []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        image = cv2.imread(path)                                         # uint8 BGR
        images.append(padding(crop_shape(image, image_size), image_size, fill=0))
        mask = cv2.imread(os.path.join(data_dir, "masks", f"{stem}.png"))  # (h, w, 3) uint8
        mask = padding(crop_shape(mask, image_size), image_size, fill=TRIMAP_BACKGROUND)[..., 0]
        label = np.full((*image_size, 3), -1.0, dtype=np.float32)
        label[mask == TRIMAP_BACKGROUND] = (1, 0, 0)
        label[mask == TRIMAP_FOREGROUND] = (0, 1, 0) if stem[0].isupper() else (0, 0, 1)
        labels.append(label)
    return np.array(images, dtype=np.float32), np.array(labels, dtype=np.float32)


def measure(load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Run ``load`` under tracemalloc: result bytes, peak traced bytes, seconds, sample count."""
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    X, y = load()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {"num": len(X), "nbytes": X.nbytes + y.nbytes, "peak": peak, "seconds": seconds}
    del X, y
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="an existing split folder with images/*.jpg and "
                                           "masks/*.png (default: random files in a temp dir)")
    parser.add_argument("--num", type=int, default=24, help="number of files to load")
    parser.add_argument("--image-size", type=int, nargs=2, default=(512, 512),
                        metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    image_size = tuple(args.image_size)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir is None:
            data_dir = os.path.join(tmp, "split")
            write_random_split(data_dir, args.num, args.seed)
        else:
            # Restrict ours to the same files as the original layout: a subset folder of links.
            data_dir = os.path.join(tmp, "subset")
            for sub in ("images", "masks"):
                os.makedirs(os.path.join(data_dir, sub))
            for example in list_examples(args.data_dir)[:args.num]:
                os.symlink(os.path.abspath(example.image_path),
                           os.path.join(data_dir, "images", example.name))
                os.symlink(os.path.abspath(example.mask_path),
                           os.path.join(data_dir, "masks", os.path.basename(example.mask_path)))

        original = measure(lambda: read_data_original_layout(data_dir, image_size, args.num))
        ours = measure(lambda: read_data(data_dir, image_size))

    assert original["num"] == ours["num"], (original["num"], ours["num"])
    n = ours["num"]
    print(f"read_data memory, {n} files at {image_size[0]}x{image_size[1]} "
          f"({'random files' if args.data_dir is None else args.data_dir})")
    print(f"{'layout':<36}{'result MB/sample':>18}{'peak MB/sample':>16}{'load s':>9}")
    for name, row in (("original: float32 BGR + one-hot", original),
                      ("ours: uint8 RGB + uint8 index", ours)):
        print(f"{name:<36}{row['nbytes'] / n / 1e6:>18.3f}{row['peak'] / n / 1e6:>16.3f}"
              f"{row['seconds']:>9.2f}")
    print(f"{'ratio original / ours':<36}{original['nbytes'] / ours['nbytes']:>17.2f}x"
          f"{original['peak'] / ours['peak']:>15.2f}x")
    target = 1.1e6
    verdict = "meets" if ours["nbytes"] / n <= target else "MISSES"
    print(f"ours: {ours['nbytes'] / n:,.0f} bytes/sample ({verdict} the 1.1 MB target)")


if __name__ == "__main__":
    main()
