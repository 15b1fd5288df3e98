"""common/files.py: output-folder guards and whole-folder replacement (the atomic file writes
are exercised by their callers' tests)."""
from __future__ import annotations

import os

import pytest

from common import files
from common.errors import EXIT_SYSTEM
from common.files import (OutputExistsError, OutputFolderError, UnwritableOutputError,
                          check_output_dir, check_replaceable, check_writable_dir, staged_dir)


@pytest.fixture
def data(tmp_path):
    """A labelled folder: data/images/a.jpg, data/masks/a.png."""
    for sub, name in (("images", "a.jpg"), ("masks", "a.png")):
        (tmp_path / "data" / sub).mkdir(parents=True)
        (tmp_path / "data" / sub / name).write_bytes(b"input")
    return tmp_path / "data"


def _inputs(data):
    return [data / "images", data / "masks"]


@pytest.mark.parametrize("out, message", [
    ("images", "is the input folder"),                      # drawings over the images
    ("images/../masks", "is the input folder"),             # the same folder spelled otherwise
    ("", "below --out"),                                    # out/masks would be data/masks
    ("images/draws", "lies inside the input folder"),
])
def test_an_output_folder_on_or_in_an_input_folder_is_refused(data, out, message):
    with pytest.raises(OutputFolderError, match=message):
        check_output_dir(data / out if out else data, _inputs(data), subfolders=("masks",))


def test_a_symlink_to_an_input_folder_is_refused(data, tmp_path):
    (tmp_path / "link").symlink_to(data / "images")
    with pytest.raises(OutputFolderError, match="is the input folder"):
        check_output_dir(tmp_path / "link", _inputs(data))


def test_a_sibling_output_folder_is_accepted_and_nothing_is_created(data):
    assert check_output_dir(data / "draws", _inputs(data), subfolders=("masks",)) == \
        data / "draws"
    assert not (data / "draws").exists()


def test_nested_ok_allows_a_subfolder_of_a_plain_folder_but_never_the_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    check_output_dir(photos / "draws", [photos], subfolders=("masks",), nested_ok=True)
    with pytest.raises(OutputFolderError, match="lies inside"):
        check_output_dir(photos / "draws", [photos])
    with pytest.raises(OutputFolderError, match="is the input folder"):
        check_output_dir(photos, [photos], nested_ok=True)
    with pytest.raises(OutputFolderError, match="below --out"):  # out/masks == photos
        check_output_dir(tmp_path, [tmp_path / "masks"], subfolders=("masks",))


def test_containing_ok_false_refuses_an_output_folder_that_holds_an_input(data, tmp_path):
    """A folder replaced whole (staged_dir) must not hold what the command reads."""
    (tmp_path / "labels.json").write_text("{}")
    inputs = [data / "images", tmp_path / "labels.json"]
    check_output_dir(tmp_path, inputs)                          # allowed unless asked
    for out in (tmp_path, data, tmp_path / "data" / ".."):
        with pytest.raises(OutputFolderError, match="contains the input"):
            check_output_dir(out, inputs, containing_ok=False)
    check_output_dir(tmp_path / "elsewhere", inputs, containing_ok=False)


def test_an_unwritable_output_folder_is_found_before_the_work(tmp_path, monkeypatch):
    check_writable_dir(tmp_path / "new" / "deep")
    assert not (tmp_path / "new").exists()  # no trace: the folders made for the probe are gone
    (tmp_path / "old").mkdir()
    check_writable_dir(tmp_path / "old")
    assert (tmp_path / "old").is_dir() and not list((tmp_path / "old").iterdir())
    (tmp_path / "a_file").write_text("in the way")
    with pytest.raises(UnwritableOutputError, match=r"cannot write into --out .*a_file/out"):
        check_writable_dir(tmp_path / "a_file" / "out")
    assert UnwritableOutputError.exit_code == EXIT_SYSTEM
    # A folder that exists but refuses files (read-only mount, permissions): the probe finds
    # it. Simulated, since root may write into a mode-555 folder.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(files.tempfile, "mkstemp", refuse)
        with pytest.raises(UnwritableOutputError, match=r"old: Permission denied"):
            check_writable_dir(tmp_path / "old")
    if os.geteuid() != 0:  # root writes into read-only folders; the file case covers root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(UnwritableOutputError, match="Permission denied"):
            check_writable_dir(locked)


def test_only_a_folder_with_the_writers_marker_is_replaced(tmp_path):
    out = tmp_path / "out"
    check_replaceable(out, marker="m.json", overwrite=False, writer="w")  # absent: fine
    out.mkdir()
    check_replaceable(out, marker="m.json", overwrite=False, writer="w")  # empty: fine
    (out / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_replaceable(out, marker="m.json", overwrite=False, writer="w")
    with pytest.raises(OutputExistsError, match="no m.json, so it was not written by w"):
        check_replaceable(out, marker="m.json", overwrite=True, writer="w")
    (out / "m.json").write_text("{}")
    check_replaceable(out, marker="m.json", overwrite=True, writer="w")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is not a folder"):
        check_replaceable(tmp_path / "file", marker="m.json", overwrite=True, writer="w")


def test_staged_dir_swaps_the_new_folder_in_and_leaves_no_trace(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, marker="m.json", overwrite=False, writer="w") as work:
        assert work.parent == tmp_path and work.name.startswith(".out.partial-")
        assert not out.exists()  # nothing visible while it is built
        (work / "m.json").write_text("1")
    assert (out / "m.json").read_text() == "1"
    with staged_dir(out, marker="m.json", overwrite=True, writer="w") as work:
        (work / "m.json").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["m.json"] and (out / "m.json").read_text() == "2"


def test_staged_dir_keeps_the_old_folder_when_the_build_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.json").write_text("old")
    with pytest.raises(OSError, match="No space left"):
        with staged_dir(out, marker="m.json", overwrite=True, writer="w") as work:
            (work / "half.jpg").write_bytes(b"...")
            raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["m.json"] and (out / "m.json").read_text() == "old"


def test_staged_dir_checks_again_before_the_swap(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="not empty"):
        with staged_dir(out, marker="m.json", overwrite=False, writer="w") as work:
            out.mkdir()
            (out / "someone_elses.txt").write_text("appeared while we worked")
            (work / "m.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["someone_elses.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
