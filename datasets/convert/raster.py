"""Shapes drawn by labelling tools -> pixels: the one coverage rule of every converter.

Coordinates are read as the tools draw them: ``(0, 0)`` is the top-left **corner** of the
image, x grows to the right, y downwards, and pixel (row ``r``, column ``c``) is the unit square
from ``(c, r)`` to ``(c + 1, r + 1)``, its centre at ``(c + 0.5, r + 0.5)`` (COCO, CVAT and
LabelMe all place points on this continuous plane).

**A pixel belongs to a shape when its centre lies inside the shape**:

* polygons (and boxes, as 4-corner polygons): even-odd rule, edges half-open, so a centre on
  a left or top edge is inside and one on a right or bottom edge is outside. A box from x = 2
  to x = 5 covers exactly the columns 2, 3, 4: a shape on the pixel grid keeps its area. A
  COCO polygon list is the union of its parts.
* ellipses and circles: ``(u / rx)**2 + (v / ry)**2 < 1`` in the ellipse's own axes.
* lines of width ``w``: centres closer than ``w / 2`` to the polyline (each segment a
  rectangle, each vertex a disk: round joins and caps).
* bitmaps (RLE and PNG masks): their pixels, placed at their offset.

Everything is clipped to the image; a shape outside it covers nothing.

Why not ``cv2.fillPoly``: OpenCV also fills every pixel its outline passes through, so a 3 px
wide box drawn with sub-pixel coordinates comes out 4 px wide and a small polygon grows by
about half a pixel all round (tests/test_convert.py measures it); the rule above keeps areas
and matches pycocotools' own polygon masks to within its 1/5 px sampling. The scan lines are
computed with NumPy over all edges at once (``benchmarks/convert_speed.py`` times it against
cv2.fillPoly and pycocotools).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Union

import numpy as np

__all__ = ["Polygons", "Polyline", "Ellipse", "Bitmap", "Geometry", "coverage",
           "box_polygon"]

# Rows x edges evaluated at once by the polygon scan (bounds the temporary arrays to ~30 MB).
_SCAN_BLOCK = 1 << 21


@dataclasses.dataclass(frozen=True)
class Polygons:
    """One or more closed rings (each an ``(n, 2)`` float array of x, y; n >= 3); the shape
    is the union of the rings, each filled by the even-odd rule."""

    rings: tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class Polyline:
    """An open polyline ``(n, 2)`` (n >= 1) drawn ``width`` pixels wide, round joins and caps."""

    points: np.ndarray
    width: float


@dataclasses.dataclass(frozen=True)
class Ellipse:
    """Centre ``(cx, cy)``, semi-axes ``rx`` (along ``angle``) and ``ry``; ``angle`` in degrees,
    clockwise on the screen (y points down), as CVAT's ``rotation``."""

    cx: float
    cy: float
    rx: float
    ry: float
    angle: float = 0.0


@dataclasses.dataclass(frozen=True)
class Bitmap:
    """A boolean ``(h, w)`` array whose top-left pixel is image pixel ``(top, left)``. ``mask``
    may be a function returning the array: RLE masks are decoded only when drawn, so a file of
    many full-image masks is never held in memory decoded at once."""

    mask: Union[np.ndarray, Callable[[], np.ndarray]]
    top: int = 0
    left: int = 0


Geometry = Union[Polygons, Polyline, Ellipse, Bitmap]

# (row offset, column offset, boolean block) of the covered pixels, or None for none.
Region = Union[tuple[int, int, np.ndarray], None]


def box_polygon(x0: float, y0: float, x1: float, y1: float, angle: float = 0.0) -> np.ndarray:
    """The 4 corners of the box ``[x0, x1] x [y0, y1]`` turned by ``angle`` degrees (clockwise
    on the screen) about its centre: ``(4, 2)`` float."""
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    if angle:
        centre = corners.mean(axis=0)
        theta = math.radians(angle)
        turn = np.array([[math.cos(theta), -math.sin(theta)],
                         [math.sin(theta), math.cos(theta)]])
        corners = (corners - centre) @ turn.T + centre
    return corners


def coverage(geometry: Geometry, height: int, width: int) -> Region:
    """The pixels of an image of ``height x width`` that ``geometry`` covers (module rule):
    ``(top, left, block)`` with ``block`` a boolean array, or None when it covers none."""
    if isinstance(geometry, Polygons):
        return _union([_polygon(ring, height, width) for ring in geometry.rings])
    if isinstance(geometry, Polyline):
        return _polyline(geometry, height, width)
    if isinstance(geometry, Ellipse):
        return _ellipse(geometry, height, width)
    if isinstance(geometry, Bitmap):
        return _bitmap(geometry, height, width)
    raise TypeError(f"not a geometry: {geometry!r}")


def _rows(y_min: float, y_max: float, height: int) -> tuple[int, int]:
    """Rows whose centre may lie in [y_min, y_max], clipped to the image: [r0, r1)."""
    return max(0, math.floor(y_min - 0.5)), min(height, math.ceil(y_max - 0.5) + 1)


def _cols(x_min: float, x_max: float, width: int) -> tuple[int, int]:
    return max(0, math.floor(x_min - 0.5)), min(width, math.ceil(x_max - 0.5) + 1)


def _polygon(ring: np.ndarray, height: int, width: int) -> Region:
    """Even-odd scan of one ring at the pixel centres. An edge crosses the centre line of row
    r when r + 0.5 lies in [its lower y, its upper y) (half-open, so a shared vertex counts
    once); a crossing at x puts the columns c >= ceil(x - 0.5), those whose centre is at or
    right of x, on the other side. Column c is inside when an odd number of crossings do so."""
    ring = np.asarray(ring, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[0] < 3 or not np.isfinite(ring).all():
        return None
    r0, r1 = _rows(ring[:, 1].min(), ring[:, 1].max(), height)
    c0, c1 = _cols(ring[:, 0].min(), ring[:, 0].max(), width)
    if r0 >= r1 or c0 >= c1:
        return None
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    sloped = y0 != y1                       # horizontal edges cross no centre line
    x0, y0, x1, y1 = x0[sloped], y0[sloped], x1[sloped], y1[sloped]
    inverse_slope = (x1 - x0) / (y1 - y0)
    cols = c1 - c0
    block = np.zeros((r1 - r0, cols), dtype=bool)
    step = max(1, _SCAN_BLOCK // max(1, x0.size))
    for start in range(r0, r1, step):
        stop = min(r1, start + step)
        rows = stop - start
        centres = np.arange(start, stop, dtype=np.float64)[:, None] + 0.5
        crossing = (y0 <= centres) != (y1 <= centres)
        row, edge = np.nonzero(crossing)
        if row.size == 0:
            continue
        x = x0[edge] + (centres[row, 0] - y0[edge]) * inverse_slope[edge]
        column = np.clip(np.ceil(x - 0.5) - c0, 0, cols).astype(np.int64)
        # Toggles laid out column-major, so the running parity along a row is an add over
        # contiguous memory (much faster than accumulating along the rows' own axis).
        toggles = (np.bincount(column * rows + row, minlength=(cols + 1) * rows) & 1)
        parity = np.cumsum(toggles.astype(np.uint8).reshape(cols + 1, rows), axis=0,
                           dtype=np.uint8)[:cols] & 1
        block[start - r0:stop - r0] = parity.T.astype(bool)
    return (r0, c0, block) if block.any() else None


def _ellipse(shape: Ellipse, height: int, width: int) -> Region:
    if not (shape.rx > 0 and shape.ry > 0) or not all(
            math.isfinite(v) for v in (shape.cx, shape.cy, shape.rx, shape.ry, shape.angle)):
        return None
    theta = math.radians(shape.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    half_x = math.hypot(shape.rx * cos, shape.ry * sin)
    half_y = math.hypot(shape.rx * sin, shape.ry * cos)
    r0, r1 = _rows(shape.cy - half_y, shape.cy + half_y, height)
    c0, c1 = _cols(shape.cx - half_x, shape.cx + half_x, width)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5 - shape.cy
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5 - shape.cx
    u = (dx * cos + dy * sin) / shape.rx
    v = (dy * cos - dx * sin) / shape.ry
    block = u * u + v * v < 1.0
    return (r0, c0, block) if block.any() else None


def _polyline(shape: Polyline, height: int, width: int) -> Region:
    """Each segment as a rectangle ``width`` wide, each vertex as a disk of diameter
    ``width``: together the centres nearer than width / 2 to the line."""
    points = np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)
    radius = shape.width / 2.0
    if points.shape[0] == 0 or not radius > 0 or not np.isfinite(points).all():
        return None
    parts = [_ellipse(Ellipse(float(x), float(y), radius, radius), height, width)
             for x, y in points]
    for a, b in zip(points[:-1], points[1:]):
        length = math.hypot(*(b - a))
        if length == 0:
            continue
        normal = np.array([a[1] - b[1], b[0] - a[0]]) * (radius / length)
        parts.append(_polygon(np.array([a + normal, b + normal, b - normal, a - normal]),
                              height, width))
    return _union(parts)


def _bitmap(shape: Bitmap, height: int, width: int) -> Region:
    mask = np.asarray(shape.mask() if callable(shape.mask) else shape.mask, dtype=bool)
    top, left = int(shape.top), int(shape.left)
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(height, top + mask.shape[0]), min(width, left + mask.shape[1])
    if r0 >= r1 or c0 >= c1:
        return None
    block = mask[r0 - top:r1 - top, c0 - left:c1 - left]
    return (r0, c0, block) if block.any() else None


def _union(regions: list[Region]) -> Region:
    """One region covering every given one (None entries ignored)."""
    regions = [region for region in regions if region is not None]
    if len(regions) <= 1:
        return regions[0] if regions else None
    top = min(r for r, _, _ in regions)
    left = min(c for _, c, _ in regions)
    bottom = max(r + block.shape[0] for r, _, block in regions)
    right = max(c + block.shape[1] for _, c, block in regions)
    merged = np.zeros((bottom - top, right - left), dtype=bool)
    for r, c, block in regions:
        merged[r - top:r - top + block.shape[0], c - left:c - left + block.shape[1]] |= block
    return top, left, merged
