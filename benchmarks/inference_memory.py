"""Peak memory of draw.py on one large photo: tiles mode (bounded) beside full mode.

Each measurement is one draw.py process on a folder holding one JPEG of the given size (a
synthetic pet scaled up: the content does not change the memory), run as a user runs it, with
the run folder's model; its peak resident set size comes from the kernel (`os.wait4`'s
ru_maxrss). First, per mode, the same command on a small image: the fixed cost (Python,
TensorFlow, the model, thread pools; in tiles mode a full batch of windows), the same for every
size. Printed per run: peak RSS, the growth over that
baseline, and the growth per pixel next to what tiles mode must hold per pixel: the decoded
image (3 bytes), the float32 accumulator of C class scores + the weight sum (4C + 4), the
mask (1), then the drawing (about 3 + 3 + 1 for the picture, its BGR copy and the class
selection).

Full mode runs the network over the whole image at once: its activations grow with the image.
Sizes in --full-sizes are measured; do not put 8000x6000 there on a shared machine (it would
need tens of GB, see the growth per pixel printed for the smaller sizes).

Run:  .venv/bin/python benchmarks/inference_memory.py [--model runs/demo]
      [--tiles-sizes 2000x1500 8000x6000] [--full-sizes 1000x750 2000x1500] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from datasets.synthetic_render import render_pet  # noqa: E402

MB = 1024 * 1024


def write_photo(folder: str, height: int, width: int) -> None:
    """One JPEG of `height` x `width`: a 384x288 synthetic cat scaled up."""
    os.makedirs(folder, exist_ok=True)
    image, _ = render_pet(np.random.default_rng(0), 288, 384, "cat")
    big = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(os.path.join(folder, "photo.jpg"), big[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 90])


def peak_rss(args: list[str], log_path: str) -> tuple[float, float]:
    """Run draw.py with `args`; its peak RSS in MB (the kernel's ru_maxrss of the reaped
    child) and its wall time."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, "draw.py"), *args],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        with open(log_path) as log:
            raise SystemExit(f"draw.py {' '.join(args)} failed:\n{log.read()[-2000:]}")
    return usage.ru_maxrss / 1024.0, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo")
    parser.add_argument("--tiles-sizes", nargs="+", default=["2000x1500", "8000x6000"])
    parser.add_argument("--full-sizes", nargs="+", default=["1000x750", "2000x1500"])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    # The baselines: full mode on one 96x96 frame; tiles mode on 384x384, 49 windows, so its
    # passes are full batches as on any large image (a batch's activations are fixed cost).
    runs = [("full", "96x96"), ("tiles", "384x384")] + [("tiles", s) for s in args.tiles_sizes] \
        + [("full", s) for s in args.full_sizes]
    baseline: dict[str, float] = {}
    print("| mode | image | peak RSS MB | growth over the first MB | growth bytes/pixel | "
          "time s |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="inference_memory_") as tmp:
        for mode, size in runs:
            width, height = (int(v) for v in size.split("x"))     # photos are named WxH
            folder = os.path.join(tmp, f"{width}x{height}")
            if not os.path.isdir(folder):
                write_photo(folder, height, width)
            peak, seconds = peak_rss(
                ["--images", folder, "--model", args.model, "--out", os.path.join(tmp, "out"),
                 "--mode", mode, "--batch-size", str(args.batch_size), "--quiet"],
                os.path.join(tmp, "draw.log"))
            baseline.setdefault(mode, peak)
            growth = peak - baseline[mode]
            print(f"| {mode} | {width}x{height} | {peak:.0f} | {growth:.0f} | "
                  f"{growth * MB / (width * height):.1f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
