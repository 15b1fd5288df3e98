"""Tests of datasets/pets*.py on tiny fake archives in the official Oxford-IIIT Pet layout.

No internet: downloads are served by an `http.server` on 127.0.0.1 in a thread (conftest's
``serve_files``).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from imagefiles import (bmp, bmp_header, cmyk_jpeg, jpeg, noise, png, trimap,
                        with_exif_orientation)
from PIL import Image

from common.files import OutputExistsError
from datasets import pets
from datasets.archives import ArchiveError
from datasets.download import ChecksumError
from datasets.pets_archives import BASE_URL, IMAGES_ARCHIVE, OFFICIAL_MD5, fetch_archive
from datasets.pets_images import check_image
from datasets.pets_prepare import REPORT_FILE, official_split, prepare_pets
from datasets.pets_report import Conversion, SkipReason
from datasets.split import seeded_split

H, W = 24, 32  # size of most fake images: (h, w)


# --------------------------------------------------------------------------------------------
# Fake data
# --------------------------------------------------------------------------------------------

def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE,
         linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


GOOD = ("Abyssinian_1", "Bombay_2", "beagle_1", "pug_3", "boxer_4")
CONVERTED = {
    "Egyptian_Mau_14": Conversion.PNG,
    "staffordshire_bull_terrier_2": Conversion.GRAYSCALE,
    "Siamese_6": Conversion.CMYK,
    "Abyssinian_5": Conversion.EXIF_ORIENTATION,
}
KEPT = sorted(GOOD + tuple(CONVERTED))
EXPECTED_SKIPPED = {
    SkipReason.MACOS_JUNK: ["annotations/trimaps/._Abyssinian_1.png", "images/._Bombay_2.jpg"],
    SkipReason.NOT_JPEG: ["images/Abyssinian_100.mat"],
    SkipReason.NO_TRIMAP: ["images/samoyed_8.jpg"],
    SkipReason.TOO_LARGE: ["images/Maine_Coon_9.jpg"],
    SkipReason.UNDECODABLE: ["images/chihuahua_7.jpg"],
    SkipReason.BAD_TRIMAP: ["images/Persian_3.jpg"],
    SkipReason.TRIMAP_SIZE_MISMATCH: ["images/havanese_2.jpg"],
}
TRAINVAL = ["Abyssinian_1", "beagle_1", "boxer_4", "Egyptian_Mau_14", "Siamese_6",
            "Maine_Coon_9", "chihuahua_7"]
TEST = ["Bombay_2", "pug_3", "staffordshire_bull_terrier_2", "samoyed_8"]
# Kept but in neither list: Abyssinian_5.


@dataclass
class FakePets:
    images_archive: Path
    annotations_archive: Path
    images: dict[str, bytes] = field(default_factory=dict)   # name -> bytes in the archive
    trimaps: dict[str, bytes] = field(default_factory=dict)  # name -> trimap PNG bytes


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> FakePets:
    root = tmp_path_factory.mktemp("archives")
    gray = np.full((H, W), 77, np.uint8)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[...] = (30, 200, 10, 128)  # BGRA: RGB (10, 200, 30), half transparent
    raw = np.zeros((H, W, 3), np.uint8)
    raw[:, :W // 2] = 255  # stored grid: left half white; EXIF says "rotate 90 degrees"
    images = {
        "Abyssinian_1": jpeg(noise(H, W, 1)),
        "Bombay_2": jpeg(noise(H, W, 2)),
        "beagle_1": jpeg(noise(H, W, 3)),
        "pug_3": jpeg(noise(H, W, 4)),
        "boxer_4": jpeg(noise(6, 599, 5)),          # larger side 599 < 600: kept
        "Egyptian_Mau_14": png(rgba),                  # PNG inside a .jpg
        "staffordshire_bull_terrier_2": jpeg(gray),    # 1-component JPEG
        "Siamese_6": cmyk_jpeg(H, W),
        "Abyssinian_5": with_exif_orientation(jpeg(raw), 6),
        "chihuahua_7": b"\x00\x01 this is not an image " * 20,
        "Maine_Coon_9": jpeg(noise(6, 600, 6)),     # larger side 600: dropped
        "samoyed_8": jpeg(noise(H, W, 7)),          # no trimap
        "Persian_3": jpeg(noise(H, W, 8)),          # trimap holds a 7
        "havanese_2": jpeg(noise(H, W, 9)),         # trimap of another size
    }
    sizes = {"boxer_4": (6, 599), "Maine_Coon_9": (6, 600)}
    trimaps = {name: png(trimap(*sizes.get(name, (H, W)))) for name in images
               if name != "samoyed_8"}
    bad = trimap(H, W)
    bad[0, 0] = 7
    trimaps["Persian_3"] = png(bad)
    trimaps["havanese_2"] = png(trimap(H + 2, W))

    image_members = [(f"images/{n}.jpg", b) for n, b in images.items()]
    image_members += [("images/Abyssinian_100.mat", b"MATLAB 5.0 MAT-file"),
                      ("images/._Bombay_2.jpg", b"\x00\x05\x16\x07 mac junk")]
    list_line = "{} 1 1 1\n".format
    annotation_members = [(f"annotations/trimaps/{n}.png", b) for n, b in trimaps.items()]
    annotation_members += [
        ("annotations/trimaps/._Abyssinian_1.png", b"\x00\x05\x16\x07 mac junk"),
        ("annotations/trimaps/orphan_1.png", png(trimap(H, W))),  # no image: unused
        ("annotations/xmls/Abyssinian_1.xml", b"<annotation/>"),
        ("annotations/list.txt", b"#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\n"),
        ("annotations/trainval.txt", "".join(map(list_line, TRAINVAL)).encode()),
        ("annotations/test.txt", ("\n" + "".join(map(list_line, TEST))).encode()),
    ]
    return FakePets(_write_tar(root / "images.tar.gz", image_members),
                    _write_tar(root / "annotations.tar.gz", annotation_members),
                    images, trimaps)


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _expected_files(train: list[str], test: list[str]) -> set[str]:
    files = {REPORT_FILE}
    for split, names in (("train", train), ("test", test)):
        files |= {f"{split}/images/{n}.jpg" for n in names}
        files |= {f"{split}/masks/{n}.png" for n in names}
    return files


def _rgb(path: Path) -> np.ndarray:
    """As a downstream reader sees it: cv2.imread (which applies EXIF orientation), as RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 3 and image.shape[2] == 3, path
    return image[..., ::-1]


# --------------------------------------------------------------------------------------------
# prepare_pets
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepared(fake, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "catdog"
    report = prepare_pets(fake.images_archive, fake.annotations_archive, out)
    return out, report


def test_kept_and_skipped_names_and_reasons(prepared):
    out, report = prepared
    assert sorted(report.train + report.test) == KEPT
    assert report.converted == CONVERTED
    assert report.skipped == EXPECTED_SKIPPED
    assert report.num_skipped == 8
    # Nothing but the tutorial layout and the report; the staging folder is gone.
    assert _files_under(out) == _expected_files(report.train, report.test)
    assert [p.name for p in out.parent.iterdir()] == ["catdog"]
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["train"] == report.train and saved["test"] == report.test
    assert saved["skipped"]["too-large"] == ["images/Maine_Coon_9.jpg"]
    assert saved["converted"]["Siamese_6"] == "cmyk"


def test_masks_are_the_trimap_bytes_and_good_jpegs_are_copied(prepared, fake):
    out, report = prepared
    for split, names in (("train", report.train), ("test", report.test)):
        for name in names:
            assert (out / split / "masks" / f"{name}.png").read_bytes() == fake.trimaps[name]
            if name in GOOD:
                assert (out / split / "images" / f"{name}.jpg").read_bytes() == fake.images[name]


def test_converted_images_are_3_channel_rgb_jpegs_with_the_right_pixels(prepared, fake):
    out, report = prepared
    where = {n: "train" for n in report.train} | {n: "test" for n in report.test}

    def load(name: str) -> np.ndarray:
        path = out / where[name] / "images" / f"{name}.jpg"
        assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG now, whatever it was before
        return _rgb(path).astype(int)

    gray = load("staffordshire_bull_terrier_2")
    assert gray.shape == (H, W, 3) and np.abs(gray - 77).max() <= 1
    # RGBA PNG: alpha dropped, stored colour kept (not blended with a background).
    png = load("Egyptian_Mau_14")
    assert png.shape == (H, W, 3) and np.abs(png - (10, 200, 30)).max() <= 4
    # CMYK: the same RGB as PIL's own conversion of the source file.
    cmyk = load("Siamese_6")
    reference = np.asarray(Image.open(io.BytesIO(fake.images["Siamese_6"])).convert("RGB"))
    assert cmyk.shape == (H, W, 3) and np.abs(cmyk - reference.astype(int)).max() <= 4
    # EXIF "rotate 90": a plain imread of the source turns it to (W, H); the output keeps the
    # stored grid the trimap was drawn on, whoever reads it.
    source = cv2.imdecode(np.frombuffer(fake.images["Abyssinian_5"], np.uint8), cv2.IMREAD_COLOR)
    assert source.shape == (W, H, 3)
    exif = load("Abyssinian_5")
    assert exif.shape == (H, W, 3)
    assert exif[:, :W // 2 - 1].min() >= 250 and exif[:, W // 2 + 1:].max() <= 5


def test_random_split_is_seeded_and_sized(fake, tmp_path, prepared):
    _, report = prepared
    # 9 kept, 10% -> round(0.9) = 1 test image, the one seeded_split picks for seed 0.
    assert (len(report.train), len(report.test)) == (8, 1)
    assert (report.train, report.test) == seeded_split(KEPT, 0.1, 0)
    again = prepare_pets(fake.images_archive, fake.annotations_archive, tmp_path / "a",
                         test_fraction=0.34, seed=3)
    same = prepare_pets(fake.images_archive, fake.annotations_archive, tmp_path / "b",
                        test_fraction=0.34, seed=3)
    assert len(again.test) == 3 and len(again.train) == 6  # round(0.34 * 9 = 3.06) = 3
    assert (again.train, again.test) == (same.train, same.test)
    assert sorted(again.train + again.test) == KEPT
    for name in again.test:
        assert (tmp_path / "a" / "test" / "images" / f"{name}.jpg").is_file()


def test_official_split_follows_the_list_files(fake, tmp_path):
    report = prepare_pets(fake.images_archive, fake.annotations_archive, tmp_path / "o",
                          split="official")
    assert report.train == sorted(["Abyssinian_1", "beagle_1", "boxer_4", "Egyptian_Mau_14",
                                   "Siamese_6"])
    assert report.test == sorted(["Bombay_2", "pug_3", "staffordshire_bull_terrier_2"])
    assert report.skipped[SkipReason.NOT_IN_SPLIT_LISTS] == ["images/Abyssinian_5.jpg"]
    assert "Abyssinian_5" not in report.converted
    assert _files_under(tmp_path / "o") == _expected_files(report.train, report.test)
    with pytest.raises(ArchiveError, match="both list 1 names"):
        official_split(["a", "b"], trainval=["a"], test=["a", "b"])


def test_max_side_boundary_is_inclusive():
    image = jpeg(noise(H, W, 0))
    mask = png(trimap(H, W))
    dropped = check_image(image, mask, max_side=W)  # larger side 32 >= 32
    assert dropped.skip is SkipReason.TOO_LARGE and dropped.detail == "32x24 px"
    kept = check_image(image, mask, max_side=W + 1)
    assert kept.skip is None and kept.conversion is None and kept.jpeg == image

    # Sizes from the header: a JPEG cut right after its frame header cannot be decoded, yet a
    # too large one is reported as such (the ~2,500 big photos are never decoded).
    def cut_after_sof(data: bytes) -> bytes:
        return data[:data.index(b"\xff\xc0") + 19]

    wide = png(trimap(6, 600))
    assert check_image(cut_after_sof(jpeg(noise(6, 600, 0))), wide).skip \
        is SkipReason.TOO_LARGE
    assert check_image(cut_after_sof(jpeg(noise(6, 599, 0))), wide).skip \
        is SkipReason.UNDECODABLE
    # BMP: measured from its DIB header too; re-encoded as JPEG when kept.
    assert check_image(bmp(noise(6, 600, 0)), wide).skip is SkipReason.TOO_LARGE
    converted = check_image(bmp(noise(6, 599, 0)), png(trimap(6, 599)))
    assert converted.skip is None and converted.conversion is Conversion.OTHER_FORMAT
    decoded = cv2.imdecode(np.frombuffer(converted.jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (6, 599, 3)


def test_a_zero_byte_member_and_a_bmp_bomb_are_counted_skips_not_crashes(fake, tmp_path):
    # The official archive's kind of junk: a zero-byte images/*.jpg (OpenCV 5 raises on empty
    # buffers), and a BMP header claiming 70000x70000 (OpenCV raises past its own cap).
    archive = _write_tar(tmp_path / "images.tar.gz", [
        ("images/Abyssinian_1.jpg", fake.images["Abyssinian_1"]),
        ("images/Bombay_2.jpg", b""),
        ("images/beagle_1.jpg", bmp_header(70000, 70000)),
        ("images/pug_3.jpg", bmp_header(7000, 8000))])
    report = prepare_pets(archive, fake.annotations_archive, tmp_path / "a",
                          test_fraction=0.0)
    assert report.train == ["Abyssinian_1"]
    junk = {SkipReason.MACOS_JUNK: ["annotations/trimaps/._Abyssinian_1.png"]}
    assert report.skipped == {SkipReason.TOO_LARGE: ["images/beagle_1.jpg", "images/pug_3.jpg"],
                              SkipReason.UNDECODABLE: ["images/Bombay_2.jpg"], **junk}
    # With the side limit lifted, the pixel limit still refuses both bombs from their headers.
    report = prepare_pets(archive, fake.annotations_archive, tmp_path / "b",
                          test_fraction=0.0, max_side=100_000, max_pixels=50_000_000)
    assert report.skipped == {
        SkipReason.OVER_PIXEL_LIMIT: ["images/beagle_1.jpg", "images/pug_3.jpg"],
        SkipReason.UNDECODABLE: ["images/Bombay_2.jpg"], **junk}
    check = check_image(bmp_header(7000, 8000), png(trimap(8000, 7000)), max_side=10_000)
    assert check.skip is SkipReason.OVER_PIXEL_LIMIT and "56.0 megapixels" in check.detail


# --------------------------------------------------------------------------------------------
# Unsafe and damaged archives
# --------------------------------------------------------------------------------------------

def test_malicious_members_are_rejected_and_nothing_is_written_outside(fake, tmp_path, caplog):
    evil_abs = tmp_path / "abs_evil.jpg"
    archive = tmp_path / "archives" / "images.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        _add(tar, "images/Abyssinian_1.jpg", fake.images["Abyssinian_1"])
        _add(tar, "../evil.txt", b"evil")
        _add(tar, str(evil_abs), fake.images["Bombay_2"])
        _add(tar, "images/../../escape.jpg", fake.images["beagle_1"])
        _add(tar, "images/passwd.jpg", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tar, "images/up.jpg", kind=tarfile.SYMTYPE, linkname="../../outside.jpg")
        _add(tar, "images/hard.jpg", kind=tarfile.LNKTYPE, linkname="../../etc/passwd")
        _add(tar, "images/null.jpg", kind=tarfile.CHRTYPE)
        _add(tar, "images/inner.jpg", kind=tarfile.SYMTYPE, linkname="Abyssinian_1.jpg")
    out = tmp_path / "work" / "out"
    report = prepare_pets(archive, fake.annotations_archive, out, test_fraction=0.0)
    assert report.train == ["Abyssinian_1"] and report.test == []
    assert report.skipped[SkipReason.UNSAFE_MEMBER] == sorted([
        "../evil.txt", str(evil_abs), "images/../../escape.jpg", "images/passwd.jpg",
        "images/up.jpg", "images/hard.jpg", "images/null.jpg"])
    assert report.skipped[SkipReason.NOT_REGULAR_FILE] == ["images/inner.jpg"]
    assert "rejected member" in caplog.text and "/etc/passwd" in caplog.text
    # Every file under tmp_path is the archive or the regular output.
    assert _files_under(tmp_path) == ({"archives/images.tar.gz"}
                                      | {f"work/out/{f}" for f in _expected_files(
                                          ["Abyssinian_1"], [])})
    assert (out / "train" / "images" / "Abyssinian_1.jpg").read_bytes() == \
        fake.images["Abyssinian_1"]


def test_damaged_or_swapped_archives_give_clear_errors(fake, tmp_path):
    truncated = tmp_path / "images.tar.gz"
    data = fake.images_archive.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(ArchiveError, match=r"images\.tar\.gz: cannot read it as a tar archive"):
        prepare_pets(truncated, fake.annotations_archive, tmp_path / "o1")
    with pytest.raises(ArchiveError, match="holds no annotations/trimaps.*swapped"):
        prepare_pets(fake.annotations_archive, fake.images_archive, tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="missing.tar.gz not found"):
        prepare_pets(tmp_path / "missing.tar.gz", fake.annotations_archive, tmp_path / "o3")
    # No half-written output or staging folder is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.tar.gz"]


def test_existing_output_is_refused_unless_overwrite(fake, tmp_path):
    out = tmp_path / "catdog"
    prepare_pets(fake.images_archive, fake.annotations_archive, out)
    (out / "stale.txt").write_text("from an older run")
    with pytest.raises(OutputExistsError, match="not empty; pass --overwrite"):
        prepare_pets(fake.images_archive, fake.annotations_archive, out)
    assert (out / "stale.txt").exists()
    report = prepare_pets(fake.images_archive, fake.annotations_archive, out,
                          overwrite=True, split="official")
    assert _files_under(out) == _expected_files(report.train, report.test)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["catdog"]

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    refused = f"refusing to replace .*photos.*{REPORT_FILE}"
    with pytest.raises(OutputExistsError, match=refused):
        prepare_pets(fake.images_archive, fake.annotations_archive, foreign, overwrite=True)
    assert _files_under(foreign) == {"holiday.jpg"}


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

@pytest.fixture
def server(fake, serve_files):
    return serve_files({"/pets/images.tar.gz": fake.images_archive.read_bytes(),
                        "/pets/annotations.tar.gz": fake.annotations_archive.read_bytes()})


def test_fetch_archive_checks_an_existing_file_and_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setitem(OFFICIAL_MD5, IMAGES_ARCHIVE, hashlib.md5(b"ok").hexdigest())
    (tmp_path / "images.tar.gz").write_bytes(b"ok")
    assert fetch_archive("images.tar.gz", tmp_path, base_url="http://unused.invalid") == \
        tmp_path / "images.tar.gz"
    (tmp_path / "images.tar.gz").write_bytes(b"damaged")
    with pytest.raises(ChecksumError, match="Delete it to download it again"):
        fetch_archive("images.tar.gz", tmp_path, base_url="http://unused.invalid")
    assert (tmp_path / "images.tar.gz").read_bytes() == b"damaged"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def test_cli_end_to_end_with_download(server, fake, tmp_path, capsys, monkeypatch):
    base = ["--base-url", f"{server.url}/pets/", "--download-dir", str(tmp_path / "dl"),
            "--out", str(tmp_path / "catdog")]
    # The official MD5s do not match the fake archives: refused, nothing kept.
    with pytest.raises(ChecksumError) as error:
        pets.main(base)
    assert "MD5" in str(error.value) and OFFICIAL_MD5["images.tar.gz"] in str(error.value)
    assert not (tmp_path / "dl" / "images.tar.gz").exists()
    assert not (tmp_path / "catdog").exists()

    assert pets.main(base + ["--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "kept 9 images:" in printed
    assert re.search(r"train\s+8\s+\(4 cats, 4 dogs\)", printed)
    assert re.search(r"too-large\s+1\s+larger side >= 600 px\n", printed)
    assert re.search(r"macos-junk\s+2 .*\n.*e\.g\. annotations/trimaps/\._Abyssinian_1\.png, "
                     r"images/\._Bombay_2\.jpg", printed)
    assert (tmp_path / "dl" / "images.tar.gz").read_bytes() == fake.images_archive.read_bytes()
    assert len(list((tmp_path / "catdog" / "train" / "images").iterdir())) == 8

    # A second run is refused before anything is downloaded.
    (tmp_path / "dl" / "images.tar.gz").unlink()
    num_requests = len(server.requests)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        pets.main(base + ["--no-verify"])
    assert len(server.requests) == num_requests

    # With the right checksums the verified path goes through; --overwrite replaces the output.
    monkeypatch.setitem(OFFICIAL_MD5, "images.tar.gz",
                        hashlib.md5(fake.images_archive.read_bytes()).hexdigest())
    monkeypatch.setitem(OFFICIAL_MD5, "annotations.tar.gz",
                        hashlib.md5(fake.annotations_archive.read_bytes()).hexdigest())
    assert pets.main(base + ["--overwrite", "--split", "official"]) == 0
    assert "official split" in capsys.readouterr().out
    assert len(list((tmp_path / "catdog" / "test" / "images").iterdir())) == 3


def test_cli_local_archives_and_help(fake, tmp_path, capsys):
    assert pets.main(["--images-archive", str(fake.images_archive), "--annotations-archive",
                      str(fake.annotations_archive), "--out", str(tmp_path / "o"),
                      "--test-fraction", "0.34", "--seed", "3", "--max-side", "33"]) == 0
    report = json.loads((tmp_path / "o" / REPORT_FILE).read_text())
    # max_side 33 also drops the 599 px boxer_4; 8 kept, round(0.34 * 8 = 2.72) = 3 test.
    assert report["skipped"]["too-large"] == ["images/Maine_Coon_9.jpg", "images/boxer_4.jpg"]
    assert (report["counts"]["train"], report["counts"]["test"]) == (5, 3)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        pets.main(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: 600)" in help_text and "(default: data/catdog)" in help_text
    assert BASE_URL in help_text
