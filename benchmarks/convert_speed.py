"""Conversion speed of ``python -m datasets.convert coco`` on a generated COCO export, and the
polygon fill of ``datasets/convert/raster.py`` against cv2.fillPoly and pycocotools.

The generator writes ``--num-images`` JPEGs (default 300 of 640x480, COCO's typical size) with
3-10 annotations each: polygons of 12-60 vertices (most), compressed RLE (one in ten) and
iscrowd uncompressed RLE (one in twenty), on 5 categories. Then, in interleaved rounds:

* convert: ``convert_dataset("coco", ...)`` into a fresh folder (read the JSON, check each
  image's header, copy it, draw and PNG-encode its mask, build aside and swap in);
* floor: what any converter must do: read and write each image file, PNG-encode and write an
  all-zero mask of its size, in a fresh folder.

Printed: images/s of both per round, and convert / floor time as median (range). Then the fill
alone, interleaved per polygon set: microseconds per polygon of ours, cv2.fillPoly (with a
1/256 px shift; not our coverage rule: it also fills the pixels the outline touches) and
pycocotools (frPyObjects + decode, COCO's own rasteriser).

Run:  .venv/bin/python benchmarks/convert_speed.py [--num-images 300] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from pycocotools import mask as coco_mask  # noqa: E402

from benchmarks.train_speed import summary  # noqa: E402  (the median (range) format)
from datasets.convert import convert_dataset  # noqa: E402
from datasets.convert.raster import Polygons, coverage  # noqa: E402

CATEGORIES = ("person", "car", "dog", "tree", "sign")


def star(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random star-shaped polygon (12-60 vertices), sometimes crossing the image border."""
    count = int(rng.integers(12, 61))
    angles = np.sort(rng.uniform(0, 2 * math.pi, count))
    radii = rng.uniform(0.3, 1.0, count) * rng.uniform(0.05, 0.35) * min(height, width)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def generate(folder: Path, num_images: int, height: int, width: int, seed: int) -> Path:
    """The images and ``instances.json``; returns the JSON's path."""
    rng = np.random.default_rng(seed)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for index in range(num_images):
        name = f"img_{index:05d}.jpg"
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        picture = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(images_dir / name), picture, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": index, "file_name": name, "height": height, "width": width})
        for _ in range(int(rng.integers(3, 11))):
            ring = star(rng, height, width)
            kind = rng.random()
            item = {"id": len(annotations), "image_id": index,
                    "category_id": int(rng.integers(1, len(CATEGORIES) + 1)), "iscrowd": 0}
            if kind < 0.85:
                item["segmentation"] = [ring.ravel().round(2).tolist()]
            else:
                bitmap = coverage(Polygons((ring,)), height, width)
                full = np.zeros((height, width), np.uint8)
                if bitmap is not None:
                    top, left, block = bitmap
                    full[top:top + block.shape[0], left:left + block.shape[1]] = block
                rle = coco_mask.encode(np.asfortranarray(full))
                if kind < 0.95:
                    item["segmentation"] = {"size": [height, width],
                                            "counts": rle["counts"].decode("ascii")}
                else:
                    flat = full.T.ravel()
                    bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
                    runs = np.diff(np.concatenate([[0], bounds, [flat.size]])).tolist()
                    item["segmentation"] = {"size": [height, width],
                                            "counts": ([0] + runs) if flat[0] else runs}
                    item["iscrowd"] = 1
            annotations.append(item)
    source = folder / "instances.json"
    source.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)]}))
    return source


def floor_copy(source: Path, images_dir: Path, out: Path) -> None:
    """Read and write every image, PNG-encode and write an all-zero mask of its size."""
    document = json.loads(source.read_text())
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    for item in document["images"]:
        data = (images_dir / item["file_name"]).read_bytes()
        (out / "images" / item["file_name"]).write_bytes(data)
        ok, png = cv2.imencode(".png", np.zeros((item["height"], item["width"]), np.uint8))
        (out / "masks" / (Path(item["file_name"]).stem + ".png")).write_bytes(png.tobytes())


def fill_times(rings: list[np.ndarray], height: int, width: int) -> dict[str, float]:
    """Microseconds per polygon of each rasteriser over ``rings``."""
    def ours() -> None:
        for ring in rings:
            coverage(Polygons((ring,)), height, width)

    def opencv() -> None:
        for ring in rings:
            canvas = np.zeros((height, width), np.uint8)
            cv2.fillPoly(canvas, [np.round((ring - 0.5) * 256).astype(np.int32)], 1, shift=8)

    def pycocotools() -> None:
        for ring in rings:
            coco_mask.decode(coco_mask.frPyObjects([ring.ravel().tolist()], height, width))

    times = {}
    for name, fill in (("ours", ours), ("cv2.fillPoly", opencv), ("pycocotools", pycocotools)):
        start = time.perf_counter()
        fill()
        times[name] = (time.perf_counter() - start) / len(rings) * 1e6
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="convert_speed_") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        source = generate(tmp / "export", args.num_images, args.height, args.width, args.seed)
        count = len(json.loads(source.read_text())["annotations"])
        print(f"generated {args.num_images} images of {args.width}x{args.height}, "
              f"{count} annotations in {time.perf_counter() - start:.1f} s", flush=True)
        rates: dict[str, list[float]] = {"convert": [], "floor": []}
        ratios = []
        for round_index in range(args.rounds):
            seconds = {}
            for name in ("convert", "floor"):
                out = tmp / f"{name}_{round_index}"
                start = time.perf_counter()
                if name == "convert":
                    report = convert_dataset("coco", source, out, images_dir=tmp / "export" /
                                             "images")
                    assert len(report.written) == args.num_images
                else:
                    floor_copy(source, tmp / "export" / "images", out)
                seconds[name] = time.perf_counter() - start
                rates[name].append(args.num_images / seconds[name])
                shutil.rmtree(out)
            ratios.append(seconds["convert"] / seconds["floor"])
            print(f"round {round_index + 1}: convert {rates['convert'][-1]:.1f} img/s, floor "
                  f"{rates['floor'][-1]:.1f} img/s, convert / floor time {ratios[-1]:.2f}",
                  flush=True)
        print(f"convert img/s {summary(rates['convert'])}; floor img/s {summary(rates['floor'])}"
              f"; convert / floor time {summary(ratios)}")

    rng = np.random.default_rng(args.seed + 1)
    fills: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        rings = [star(rng, args.height, args.width) for _ in range(200)]
        for name, value in fill_times(rings, args.height, args.width).items():
            fills.setdefault(name, []).append(value)
    print("polygon fill, us per polygon (200 per round): " + "; ".join(
        f"{name} {summary(values)}" for name, values in fills.items()))


if __name__ == "__main__":
    main()
