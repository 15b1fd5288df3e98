"""python -m datasets.convert: COCO, LabelMe and CVAT exports made here -> the data folder.

Every expected mask is drawn independently of datasets/convert/raster.py: polygons by a
per-pixel even-odd crossing count, circles, ellipses and lines by distances, boxes and bitmaps
as hand-written slices. The test shapes keep every pixel centre at least 1e-6 px away from
their outlines (checked), so the result does not hang on how ties are broken.
"""
from __future__ import annotations

import base64
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from common.cli import run
from common.errors import ConfigError, DataError
from common.files import OutputFolderError
from datasets.convert import MARKER_FILE, convert_dataset, resolve_classes
from datasets.convert.command import main
from datasets.convert.raster import Polygons, coverage
from imagefiles import with_exif_orientation

H, W = 40, 48           # every test image
TIE = 1e-6              # least distance of a pixel centre from an outline in the test shapes


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------

def centres():
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    return xs, ys


def segment_distance(points, closed):
    """Distance of every pixel centre to the polyline (or closed ring) ``points``."""
    xs, ys = centres()
    points = np.asarray(points, float)
    pairs = list(zip(points, np.roll(points, -1, axis=0)))[: None if closed else -1]
    best = np.full((H, W), np.inf)
    for a, b in pairs:
        ab = b - a
        t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(ab @ ab, 1e-300), 0, 1)
        best = np.minimum(best, np.hypot(xs - a[0] - t * ab[0], ys - a[1] - t * ab[1]))
    if len(points) == 1:
        best = np.hypot(xs - points[0][0], ys - points[0][1])
    return best


def in_polygon(points):
    """Even-odd: a centre is inside when a ray to its left crosses the outline an odd number
    of times."""
    xs, ys = centres()
    assert segment_distance(points, closed=True).min() > TIE, "a centre lies on the outline"
    inside = np.zeros((H, W), bool)
    for (x0, y0), (x1, y1) in zip(points, np.roll(np.asarray(points, float), -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 <= ys) != (y1 <= ys)
        inside ^= crosses & (x0 + (ys - y0) * (x1 - x0) / (y1 - y0) <= xs)
    return inside


def near_line(points, width):
    distance = segment_distance(points, closed=False)
    assert np.abs(distance - width / 2).min() > TIE
    return distance < width / 2


def in_ellipse(cx, cy, rx, ry, degrees=0.0):
    xs, ys = centres()
    t = math.radians(degrees)
    u = ((xs - cx) * math.cos(t) + (ys - cy) * math.sin(t)) / rx
    v = ((ys - cy) * math.cos(t) - (xs - cx) * math.sin(t)) / ry
    assert np.abs(u * u + v * v - 1).min() > TIE
    return u * u + v * v < 1


def runs(bitmap):
    """Run lengths of a boolean array in row-major order, the first run of False."""
    flat = np.asarray(bitmap, bool).ravel()
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    lengths = np.diff(bounds).tolist()
    return ([0] + lengths) if flat[0] else lengths


def write_image(path: Path, height=H, width=W, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(path.suffix, pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return data.tobytes()


def read_mask(folder: Path, stem: str) -> np.ndarray:
    mask = cv2.imread(str(folder / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == (H, W)
    return mask


def skipped(report, kind: str) -> dict[str, list[str]]:
    table = report.skipped_images if kind == "images" else report.skipped_shapes
    return {reason.value: names for reason, names in table.items()}


# ---------------------------------------------------------------------------------------------
# The coverage rule
# ---------------------------------------------------------------------------------------------

def painted(geometry) -> np.ndarray:
    out = np.zeros((H, W), bool)
    region = coverage(geometry, H, W)
    if region is not None:
        top, left, block = region
        out[top:top + block.shape[0], left:left + block.shape[1]] = block
    return out


def test_polygons_cover_the_pixels_whose_centres_are_inside_and_are_clipped():
    rng = np.random.default_rng(4)
    for _ in range(60):   # convex, concave and self-crossing, many partly outside the image
        ring = rng.uniform(-12, 60, (int(rng.integers(3, 10)), 2))
        assert np.array_equal(painted(Polygons((ring,))), in_polygon(ring))
    box = np.zeros((H, W), bool)
    box[1:3, 2:5] = True                      # x 2..5, y 1..3: exactly 3 x 2 pixels
    assert np.array_equal(painted(Polygons((np.array([[2, 1], [5, 1], [5, 3], [2, 3]]),))), box)
    box[:] = False
    box[35:, 40:] = True                      # clipped at the bottom-right corner
    assert np.array_equal(painted(Polygons((np.array([[40, 35], [60, 35], [60, 90],
                                                      [40, 90]]),))), box)
    assert painted(Polygons((np.array([[50, 1], [60, 1], [55, 9]]),))).sum() == 0


def test_cv2_fillpoly_would_grow_a_box_and_pycocotools_agrees_with_the_rule():
    """Why raster.py does not use cv2.fillPoly: with sub-pixel coordinates it also fills the
    pixels its outline touches; pycocotools (COCO's own masks) follows the centre rule to
    within its 1/5 px sampling."""
    box = np.array([[2.3, 1.0], [5.3, 1.0], [5.3, 3.0], [2.3, 3.0]])
    grown = np.zeros((H, W), np.uint8)
    cv2.fillPoly(grown, [np.round((box - 0.5) * 256).astype(np.int32)], 1, shift=8)
    assert grown[1].sum() == 4 and painted(Polygons((box,)))[1].sum() == 3
    rng = np.random.default_rng(5)
    for _ in range(20):
        ring = rng.uniform(0, 45, (int(rng.integers(3, 8)), 2))
        theirs = coco_mask.decode(coco_mask.merge(
            coco_mask.frPyObjects([ring.ravel().tolist()], H, W))) > 0
        differ = painted(Polygons((ring,))) != theirs
        assert segment_distance(ring, closed=True)[differ].max(initial=0) < 0.25


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------

CAT_A = np.array([[3.3, 2.1], [21.7, 4.45], [12.2, 17.9]])
CAT_B = np.array([[40.2, 30.3], [60.1, 29.7], [55.3, 48.2], [38.9, 44.6]])   # partly outside


def coco_arrays():
    dog = np.zeros((H, W), bool)
    dog[8:22, 10:30] = True
    dog[12:15, 14:18] = False                              # a hole only RLE can hold
    crowd = np.zeros((H, W), bool)
    crowd[0:6, 30:48] = True
    dog_b = np.zeros((H, W), bool)
    dog_b[20:40, 0:24] = True
    return dog, crowd, dog_b


def make_coco(root: Path) -> tuple[Path, Path]:
    images = root / "photos"
    for name in ("a.jpg", "c.jpg", "f.jpg", "f.png", "g.jpg"):
        write_image(images / name)
    write_image(images / "b.png", seed=1)
    write_image(images / "d.jpg", height=H + 1)           # not the recorded size
    (images / "r.jpg").write_bytes(with_exif_orientation(write_image(images / "r.jpg"), 6))
    (images / "h.jpg").write_bytes(b"not an image")
    write_image(images / ".hidden.jpg")
    write_image(images / "scan.bmp")
    dog, crowd, dog_b = coco_arrays()
    compressed = coco_mask.encode(np.asfortranarray(dog.astype(np.uint8)))
    entries = [("a.jpg", 1), ("b.png", 2), ("c.jpg", 3), ("d.jpg", 4), ("e.jpg", 5),
               ("f.jpg", 6), ("f.png", 7), ("g.jpg", 8), ("g.jpg", 9), ("r.jpg", 30),
               ("h.jpg", 31), (".hidden.jpg", 32), ("scan.bmp", 33)]
    flat = lambda ring: ring.ravel().tolist()              # noqa: E731
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 2, "segmentation": [flat(CAT_A), flat(CAT_B)]},
        {"id": 11, "image_id": 1, "category_id": 5, "iscrowd": 0,
         "segmentation": {"size": [H, W], "counts": compressed["counts"].decode("ascii")}},
        {"id": 12, "image_id": 1, "category_id": 9, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": runs(crowd.T)}},     # column-major
        {"id": 13, "image_id": 2, "category_id": 5,
         "segmentation": {"size": [H, W], "counts": runs(dog_b.T)}},
        {"id": 14, "image_id": 2, "category_id": 2,
         "segmentation": [[10, 5, 20, 5, 20, 15, 10, 15]]},
        {"id": 15, "image_id": 4, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 20, "image_id": 77, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 21, "image_id": 2, "category_id": 4, "segmentation": [[1, 1, 9, 1, 9, 9]]},
        {"id": 22, "image_id": 2, "category_id": 2, "segmentation": [[1, 1, 9, 1]]},
        {"id": 23, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5]},
        {"id": 24, "image_id": 2, "category_id": 2,
         "segmentation": {"size": [H, W], "counts": [5, 5]}},
        {"id": 25, "image_id": 2, "category_id": 2, "segmentation": [[1, 1, 9, 1, 9]]},
    ]
    document = {"images": [{"id": i, "file_name": n, "height": H, "width": W}
                           for n, i in entries],
                "annotations": annotations,
                "categories": [{"id": 9, "name": "person"}, {"id": 2, "name": "cat"},
                               {"id": 5, "name": "dog"}]}
    path = root / "instances.json"
    path.write_text(json.dumps(document))
    return path, images


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    source, images = make_coco(root)
    report = convert_dataset("coco", source, root / "out", images_dir=images)
    return root, images, report


def expected_a(crowd_value=255):
    dog, crowd, _ = coco_arrays()
    mask = np.zeros((H, W), np.uint8)
    mask[in_polygon(CAT_A) | in_polygon(CAT_B)] = 1
    mask[dog] = 2
    mask[crowd] = crowd_value
    return mask


def test_coco_polygons_rles_and_crowds_are_drawn_in_file_order(coco):
    root, images, report = coco
    out = root / "out"
    assert json.loads((out / "classes.json").read_text())["classes"] == [
        "background", "cat", "dog", "person"]                          # category-id order
    assert np.array_equal(read_mask(out, "a"), expected_a())
    b = np.zeros((H, W), np.uint8)
    b[coco_arrays()[2]] = 2
    b[5:15, 10:20] = 1                                  # the later cat over the dog
    assert np.array_equal(read_mask(out, "b"), b)
    assert not read_mask(out, "c").any()                # no annotation: all background
    assert report.written == ["a.jpg", "b.png", "c.jpg"] and report.all_background == 1
    for name in report.written:                         # copied byte for byte
        assert (out / "images" / name).read_bytes() == (images / name).read_bytes()
    assert skipped(report, "images") == {
        "image-missing": ["e.jpg"], "referenced-twice": ["g.jpg"], "same-stem": ["f.jpg", "f.png"],
        "hidden-name": [".hidden.jpg"], "unsupported-image": ["scan.bmp"],
        "unreadable-image": ["h.jpg"], "size-mismatch": ["d.jpg"], "exif-rotated": ["r.jpg"]}
    assert skipped(report, "shapes") == {
        "unknown-image": ["annotation 20"], "unknown-category": ["annotation 21 (b.png)"],
        "degenerate": ["annotation 22 (b.png) polygon 0"],
        "malformed-shape": ["annotation 25 (b.png) polygon 0"],
        "bad-rle": ["annotation 24 (b.png)"], "no-segmentation": ["annotation 23 (b.png)"]}
    shapes = {name: int(report.counts.shapes[v]) for name, v in report._rows()}
    assert shapes == {"background": 0, "cat": 2, "dog": 2, "person": 0, "(ignore)": 1}
    pixels = sum(np.bincount(read_mask(out, Path(name).stem).ravel(), minlength=256)
                 for name in report.written)
    assert np.array_equal(report.counts.pixels, pixels)
    saved = json.loads((out / MARKER_FILE).read_text())
    assert saved["per_class"]["dog"]["pixels"] == int(pixels[2])


def test_coco_crowds_as_their_class_and_empty_images_skipped(coco, tmp_path):
    root, images, _ = coco
    report = convert_dataset("coco", root / "instances.json", tmp_path / "out",
                             images_dir=images, crowd_as_class=True, skip_empty=True)
    assert np.array_equal(read_mask(tmp_path / "out", "a"), expected_a(crowd_value=3))
    assert report.written == ["a.jpg", "b.png"]
    assert skipped(report, "images")["empty-image"] == ["c.jpg"]


# ---------------------------------------------------------------------------------------------
# LabelMe
# ---------------------------------------------------------------------------------------------

ROAD = [[1.2, 20.3], [46.6, 18.1], [44.3, 30.7], [2.1, 31.4]]
HOLE = [[20.4, 22.2], [26.9, 22.6], [23.3, 27.7]]
LINE = [[2.2, 38.1], [45.7, 33.4]]
STRIP = [[5.3, 5.1], [15.6, 9.2], [25.1, 3.7]]
CAR_BITS = np.array([[0, 1, 1, 0, 0, 1], [1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1],
                     [1, 0, 0, 0, 0, 1]], bool)


def shape(label, kind, points, **extra):
    return {"label": label, "shape_type": kind, "points": points, "group_id": 3, "flags": {},
            **extra}


def make_labelme(root: Path) -> Path:
    folder = root / "labelme"
    folder.mkdir()
    embedded = write_image(root / "embedded.png", seed=2)
    ok, bits = cv2.imencode(".png", CAR_BITS.astype(np.uint8))
    shapes = [
        shape("road", "polygon", ROAD),
        shape("car", "rectangle", [[40.0, 12.0], [30.0, 5.0]]),         # corners in any order
        shape("sign", "circle", [[10.3, 30.2], [14.1, 31.0]]),
        shape("lane", "line", LINE),
        shape("lane", "linestrip", STRIP),
        shape("sign", "point", [[3.0, 3.0]]),
        shape("car", "mask", [[20.0, 33.0], [25.0, 36.0]],
              mask=base64.b64encode(bits.tobytes()).decode()),
        shape("background", "polygon", HOLE),
        shape("ignore", "rectangle", [[0.0, 0.0], [4.0, 2.0]]),
        shape("car", "cuboid", [[1.0, 1.0], [2.0, 2.0]]),
        {"label": "road", "points": [[1.0, 1.0], [5.0, 1.0]]},            # no shape_type: polygon
    ]
    (folder / "one.json").write_text(json.dumps({
        "version": "5.5.0", "shapes": shapes, "imagePath": "one.jpg",
        "imageData": base64.b64encode(embedded).decode(), "imageHeight": H, "imageWidth": W}))
    write_image(root / "pics" / "two.jpg", seed=3)
    (folder / "two.json").write_text(json.dumps({
        "shapes": [shape("car", "polygon", [[3.5, 3.5], [9.5, 3.5], [9.5, 7.5], [3.5, 7.5]])],
        "imagePath": "../pics/two.jpg", "imageData": None, "imageHeight": H, "imageWidth": W}))
    (folder / "three.json").write_text(json.dumps({"shapes": [], "imagePath": "gone.jpg"}))
    (folder / "notes.json").write_text(json.dumps({"comment": "not an annotation"}))
    return folder


def test_labelme_every_shape_type_and_both_image_sources(tmp_path):
    folder = make_labelme(tmp_path)
    report = convert_dataset("labelme", folder, tmp_path / "out", ignore_labels=["ignore"],
                             line_width=3)
    names = ["background", "car", "lane", "road", "sign"]              # sorted labels
    assert report.class_names == tuple(names)
    value = {name: index for index, name in enumerate(names)}
    expected = np.zeros((H, W), np.uint8)
    expected[in_polygon(ROAD)] = value["road"]
    expected[5:12, 30:40] = value["car"]
    expected[in_ellipse(10.3, 30.2, math.hypot(3.8, 0.8), math.hypot(3.8, 0.8))] = value["sign"]
    expected[near_line(LINE, 3)] = value["lane"]
    expected[near_line(STRIP, 3)] = value["lane"]
    expected[33:37, 20:26][CAR_BITS] = value["car"]                     # box corners inclusive
    expected[in_polygon(HOLE)] = 0
    expected[0:2, 0:4] = 255
    out = tmp_path / "out"
    assert np.array_equal(read_mask(out, "one"), expected)
    assert (out / "images" / "one.png").read_bytes() == (tmp_path / "embedded.png").read_bytes()
    two = np.zeros((H, W), np.uint8)
    two[3:7, 3:9] = value["car"]
    assert np.array_equal(read_mask(out, "two"), two)
    assert (out / "images" / "two.jpg").read_bytes() == (tmp_path / "pics/two.jpg").read_bytes()
    assert skipped(report, "images") == {"image-missing": ["three.json"],
                                         "not-labelme": ["notes.json"]}
    assert skipped(report, "shapes") == {"degenerate": ["one.json shape 10"],
                                         "point": ["one.json shape 5"],
                                         "unsupported-shape": ["one.json shape 9"]}


# ---------------------------------------------------------------------------------------------
# CVAT
# ---------------------------------------------------------------------------------------------

CVAT_CAR = [[8.3, 2.2], [30.6, 9.9], [14.4, 24.3]]
CVAT_ROAD = [[0.7, 36.2], [22.1, 28.3], [47.4, 37.7]]
CVAT_BITS = np.array([[1, 1, 0, 0, 1, 1, 1, 0, 1, 1], [0, 1, 1, 1, 0, 0, 1, 1, 1, 1],
                      [1, 0, 0, 1, 1, 1, 0, 0, 0, 1]], bool)


def points(ring):
    return ";".join(f"{x},{y}" for x, y in ring)


def make_cvat(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    write_image(images / "x.jpg")
    write_image(images / "y.png", seed=1)
    rle = ", ".join(map(str, runs(CVAT_BITS)))
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>car</name><type>polygon</type><attributes></attributes></label>
    <label><name>kp</name><type>points</type></label>
    <label><name>road</name><type>any</type></label>
    <label><name>s1</name><type>skeleton</type></label>
    <label><name>1</name><type>points</type><parent>s1</parent></label>
    <label><name>tree</name><type>rectangle</type></label>
  </labels></task></meta>
  <image id="0" name="x.jpg" width="{W}" height="{H}">
    <box label="tree" occluded="0" xtl="4" ytl="4" xbr="20" ybr="16" z_order="2"></box>
    <polygon label="car" points="{points(CVAT_CAR)}" z_order="1"></polygon>
    <polyline label="road" points="{points(CVAT_ROAD)}" z_order="0"></polyline>
    <mask label="car" rle="{rle}" left="42" top="30" width="10" height="3" z_order="0"></mask>
    <ellipse label="tree" cx="33.3" cy="20.1" rx="7.2" ry="3.1" rotation="30" z_order="0"/>
    <box label="road" xtl="30" ytl="30" xbr="40" ybr="34" rotation="90" z_order="0"></box>
    <points label="kp" points="3,3" z_order="0"></points>
    <tag label="car" source="manual"></tag>
  </image>
  <image id="1" name="y.png" width="{W}" height="{H}">
    <polygon label="car" points="1,1;5,5" z_order="0"></polygon>
    <box label="cloud" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"></box>
    <mask label="car" rle="3, 4" left="0" top="0" width="3" height="3" z_order="0"></mask>
    <box label="tree" xtl="2" ytl="2" xbr="6" ybr="5" z_order="0"></box>
  </image>
</annotations>"""
    path = root / "annotations.xml"
    path.write_text(xml)
    return path, images


def test_cvat_shapes_drawn_by_z_order_then_file_order(tmp_path):
    source, images = make_cvat(tmp_path)
    report = convert_dataset("cvat", source, tmp_path / "out", images_dir=images,
                             line_width=3)
    assert report.class_names == ("background", "car", "road", "tree")  # points labels left out
    expected = np.zeros((H, W), np.uint8)
    expected[near_line(CVAT_ROAD, 3)] = 2                               # z 0, file order
    expected[30:33, 42:48][CVAT_BITS[:, :6]] = 1                        # clipped at x = 48
    expected[in_ellipse(33.3, 20.1, 7.2, 3.1, 30)] = 3
    expected[27:37, 33:37] = 2                        # 10 x 4 box turned 90 degrees: 4 x 10
    expected[in_polygon(CVAT_CAR)] = 1                                  # z 1
    expected[4:16, 4:20] = 3                                            # z 2, first in the file
    out = tmp_path / "out"
    assert np.array_equal(read_mask(out, "x"), expected)
    y = np.zeros((H, W), np.uint8)
    y[2:5, 2:6] = 3
    assert np.array_equal(read_mask(out, "y"), y)
    assert skipped(report, "shapes") == {
        "unknown-label": ["y.png <box> 1"], "degenerate": ["y.png <polygon> 0"],
        "bad-rle": ["y.png <mask> 2"], "point": ["x.jpg <points> 6"],
        "unsupported-shape": ["x.jpg <tag> 7"]}


# ---------------------------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------------------------

def test_classes_background_first_then_the_tools_order_or_exactly_as_given():
    names, values = resolve_classes(["zebra", "ant", "void", "bg"], background="bg",
                                    ignore_labels=["void"])
    assert names == ("bg", "zebra", "ant")
    assert values == {"bg": 0, "zebra": 1, "ant": 2, "void": 255}
    names, values = resolve_classes(["zebra", "ant"], classes=["sky", "ant"])
    assert names == ("sky", "ant") and "zebra" not in values       # its shapes: unknown-label
    with pytest.raises(ConfigError, match="--background 'bg' but --classes names class 0 'sky'"):
        resolve_classes([], classes=["sky", "ant"], background="bg")
    with pytest.raises(ConfigError, match="--ignore-label ant is also in --classes"):
        resolve_classes([], classes=["sky", "ant"], ignore_labels=["ant"])
    with pytest.raises(DataError, match=r"the labels of x.json: class name 'a,b' .* --classes"):
        resolve_classes(["a,b"], source="x.json")


def test_masks_without_background_get_a_label_format_warning(tmp_path):
    """Masks holding only values 1-3 look like Oxford trimaps to --label-format auto."""
    write_image(tmp_path / "src" / "full.jpg")
    (tmp_path / "src" / "full.json").write_text(json.dumps({
        "shapes": [shape("wall", "rectangle", [[-5, -5], [60, 60]])], "imagePath": "full.jpg"}))
    report = convert_dataset("labelme", tmp_path / "src" / "full.json", tmp_path / "out")
    assert read_mask(tmp_path / "out", "full").min() == 1
    assert any("pass --label-format index" in warning for warning in report.warnings)
    assert "WARNING: the first masks hold only the values 1-3" in report.summary()


# ---------------------------------------------------------------------------------------------
# The command boundary: bad input, the output folder
# ---------------------------------------------------------------------------------------------

def command(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["python -m datasets.convert", *map(str, argv)])
    with pytest.raises(SystemExit) as stop:
        run(main)
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize("case", ["coco-json", "coco-ids", "labelme-json", "cvat-xml",
                                  "cvat-video"])
def test_malformed_files_are_one_line_errors_naming_the_file(tmp_path, monkeypatch, capsys,
                                                             case):
    images = tmp_path / "images"
    write_image(images / "a.jpg")
    fmt = case.split("-")[0]
    source = {"coco": tmp_path / "in.json", "labelme": tmp_path / "lm",
              "cvat": tmp_path / "in.xml"}[fmt]
    text = {"coco-json": '{"images": [', "cvat-xml": "<annotations><image name='a.jpg'>",
            "coco-ids": json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}] * 2,
                                    "categories": []}),
            "cvat-video": "<annotations><track id='0' label='car'/></annotations>"}
    if fmt == "labelme":
        source.mkdir()
        (source / "a.json").write_text('{"shapes": [}')
        written = source / "a.json"
    else:
        source.write_text(text[case])
        written = source
    code, out, err = command(monkeypatch, capsys, fmt, source, "--images", images,
                             "--out", tmp_path / "out")
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and str(written) in err
    assert not (tmp_path / "out").exists()


def test_the_output_folder_is_guarded_and_replaced_only_when_it_is_ours(tmp_path, monkeypatch,
                                                                        capsys):
    source, images = make_cvat(tmp_path)
    for out in (images, images / "inside", tmp_path, images.parent / "x" / ".."):
        with pytest.raises(OutputFolderError):
            convert_dataset("cvat", source, out, images_dir=images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.xml", "images"]

    out = tmp_path / "data"
    code, printed, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                                 "--out", out)
    assert code == 0 and "wrote 2 images and masks" in printed, err
    code, _, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                           "--out", out)
    assert code == 2 and "pass --overwrite" in err
    (out / "masks" / "x.png").write_bytes(b"stale")
    code, _, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                           "--out", out, "--overwrite")
    assert code == 0 and read_mask(out, "x").shape == (H, W)
    # The swap would delete an input kept inside an earlier output.
    kept = out / "annotations.xml"
    kept.write_bytes(source.read_bytes())
    with pytest.raises(OutputFolderError, match="contains the input"):
        convert_dataset("cvat", kept, out, images_dir=images, overwrite=True)
    assert kept.read_bytes() == source.read_bytes()
    (out / MARKER_FILE).unlink()
    code, _, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                           "--out", out, "--overwrite")
    assert code == 2 and f"it has no {MARKER_FILE}" in err


def test_a_failure_midway_or_nothing_to_convert_leaves_no_folder(tmp_path, monkeypatch, capsys):
    source, images = make_cvat(tmp_path)
    encode = cv2.imencode
    calls = []

    def fail_second(ext, array, *args):
        calls.append(ext)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return encode(ext, array, *args)

    monkeypatch.setattr(cv2, "imencode", fail_second)
    code, _, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                           "--out", tmp_path / "out")
    assert code == 3 and "No space left on device" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(cv2, "imencode", encode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.xml", "images"]

    for name in ("x.jpg", "y.png"):
        (images / name).unlink()
    code, _, err = command(monkeypatch, capsys, "cvat", source, "--images", images,
                           "--out", tmp_path / "out")
    assert code == 4 and "no image converted" in err and "2 image-missing (e.g. x.jpg)" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# End to end: the data check and one training epoch on a converted folder
# ---------------------------------------------------------------------------------------------

def test_a_converted_folder_is_checked_and_trained_on_as_it_is(coco, tmp_path):
    from datasets.check import check_folder
    from datasets.data import DataSet
    from datasets.examples import list_examples
    from datasets.label_format import resolve_label_format
    from datasets.loading import load_examples
    from datasets.utils import padding
    from learning.evaluators import AccuracyEvaluator
    from learning.optimizers import MomentumOptimizer
    from tiny import SIZE, tiny_model

    root, _, report = coco
    folder = root / "out"
    checked = check_folder(folder)
    assert checked.label_format.kind == "index"
    assert checked.label_format.class_names == ("background", "cat", "dog", "person")
    assert np.array_equal(checked.histogram.pixels, report.counts.pixels[:4])
    assert checked.histogram.ignored_pixels == report.counts.pixels[255]
    assert not checked.problems
    # person's only region is a crowd (255): both the check and the conversion say so.
    assert len(checked.warnings()) == 1 and "person" in checked.warnings()[0]
    assert report.warnings == ["class(es) without any pixel in the masks: person"]

    examples = list_examples(folder)
    label_format = resolve_label_format(examples, "auto", data_dir=folder)
    images, labels, names = load_examples(examples, (SIZE, SIZE), label_format=label_format)
    assert names == report.written
    assert np.array_equal(labels[0], padding(expected_a(), (SIZE, SIZE)))
    model = tiny_model(num_classes=label_format.num_classes)
    results = MomentumOptimizer(model, DataSet(images, labels, seed=0), AccuracyEvaluator(),
                                batch_size=3, num_epochs=1).train(tmp_path / "run",
                                                                  details=True, verbose=False)
    assert len(results["step_losses"]) == 1 and np.isfinite(results["step_losses"]).all()


def test_every_option_is_on_the_user_page():
    from datasets.convert.command import build_parser

    page = (Path(__file__).resolve().parents[1] / "docs" / "labelling-tools.md").read_text()
    options = [option for action in build_parser()._actions for option in action.option_strings
               if option.startswith("--") and option != "--help"]
    assert len(options) >= 12
    assert [option for option in options if f"`{option}" not in page] == []
