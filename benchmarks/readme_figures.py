"""The README's two pictures, made from a demo run (`make demo` first; `make figures` runs this).

    docs/demo_overlays.png   test images with the predicted mask drawn over them (test.py's
                             drawings): the first cats and dogs by name, in a grid with a legend
    docs/demo_curve.png      the run's learning curve, as train.py drew it

Both are rebuilt from the files on every call, so the pictures follow the recipe; each must
stay under --max-kb, or the script fails rather than bloat the repository.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from learning.previews import encode_png
from learning.run_folder import RunFolder
from learning.run_info import read_run_labels
from learning.utils import draw_legend

CELL = 96       # px: each drawing is centred in a CELL x CELL square, shrunk only if larger
GAP = 4         # px of white between cells and around the grid
WHITE = 255


def _pick(draws: Path, per_class: int) -> list[Path]:
    """The first ``per_class`` cats (capitalised names) and dogs (lower case) in name order,
    cats on the first row, dogs on the second: the same pictures on every run of one data set."""
    names = sorted(p for p in draws.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()
                   and p.name != "summary_sheet.png")
    cats = [p for p in names if p.name[:1].isupper()][:per_class]
    dogs = [p for p in names if p.name[:1].islower()][:per_class]
    if len(cats) < per_class or len(dogs) < per_class:
        raise SystemExit(f"error: {draws} holds {len(cats)} cat and {len(dogs)} dog drawings, "
                         f"{per_class} of each are needed: run `make demo` first")
    return cats + dogs


def _cell(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: cannot read {path}: run `make demo` again")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    # At their own size: enlarged, the noisy synthetic textures would make a PNG twice as big.
    scale = min(1.0, CELL / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cell = np.full((CELL, CELL, 3), WHITE, np.uint8)
    top, left = (CELL - size[1]) // 2, (CELL - size[0]) // 2
    cell[top:top + size[1], left:left + size[0]] = image
    return cell


def overlay_grid(draws: Path, class_names: Sequence[str],
                 colors: Mapping[int, tuple[int, int, int]], per_class: int) -> np.ndarray:
    cells = [_cell(path) for path in _pick(draws, per_class)]
    rows = [cells[:per_class], cells[per_class:]]
    grid = np.full((GAP + len(rows) * (CELL + GAP), GAP + per_class * (CELL + GAP), 3), WHITE,
                   np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            top, left = GAP + r * (CELL + GAP), GAP + c * (CELL + GAP)
            grid[top:top + CELL, left:left + CELL] = cell
    return draw_legend(grid, class_names, colors, placement="right")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", help="the demo's run folder")
    parser.add_argument("--draws", default="data/synthetic/test/draws",
                        help="test.py's drawings of the demo's test images")
    parser.add_argument("--out", default="docs", help="where the two PNGs go")
    parser.add_argument("--per-class", type=int, default=4, help="cats and dogs shown of each")
    parser.add_argument("--max-kb", type=int, default=150, help="largest PNG allowed, in KiB")
    args = parser.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    curve = run / f"{RunFolder.CURVE_STEM}.png"
    if not curve.is_file():
        raise SystemExit(f"error: {curve} is missing: run `make demo` first")
    labels = read_run_labels(run)  # the class names and colours test.py drew with

    out.mkdir(parents=True, exist_ok=True)
    overlays, curve_copy = out / "demo_overlays.png", out / "demo_curve.png"
    overlays.write_bytes(encode_png(overlay_grid(Path(args.draws), labels.class_names,
                                                 labels.colors, args.per_class)))
    shutil.copyfile(curve, curve_copy)
    for path in (overlays, curve_copy):
        kib = path.stat().st_size / 1024
        print(f"{path}: {kib:.0f} KiB")
        if kib > args.max_kb:
            raise SystemExit(f"error: {path} is {kib:.0f} KiB, over --max-kb {args.max_kb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
