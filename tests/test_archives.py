"""datasets/archives.py: which tar members are unsafe to extract by their own path, and the
stream reader."""
from __future__ import annotations

import io
import tarfile

import pytest

from datasets.archives import ArchiveError, iter_members, unsafe_member_reason


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("info, problem", [
    (_info("images/a.jpg"), None),
    (_info("./images/a.jpg"), None),
    (_info("images"), None),
    (_info("images/b.jpg", tarfile.SYMTYPE, "a.jpg"), None),
    (_info("images/b.jpg", tarfile.SYMTYPE, "../annotations/x.png"), None),
    (_info("images/b.jpg", tarfile.LNKTYPE, "images/a.jpg"), None),
    (_info("/etc/evil.jpg"), "absolute path"),
    (_info("C:/evil.jpg"), "absolute path"),
    (_info("../evil.txt"), "contains '..'"),
    (_info("images/../../evil.jpg"), "contains '..'"),
    (_info("images\\..\\evil.jpg"), "backslash"),
    (_info("images/b.jpg", tarfile.SYMTYPE, "/etc/passwd"), "points outside"),
    (_info("images/b.jpg", tarfile.SYMTYPE, "../../etc/passwd"), "points outside"),
    (_info("images/b.jpg", tarfile.LNKTYPE, "../etc/passwd"), "points outside"),
    (_info("images/b.jpg", tarfile.CHRTYPE), "device file or FIFO"),
    (_info("images/b.jpg", tarfile.BLKTYPE), "device file or FIFO"),
    (_info("images/b.jpg", tarfile.FIFOTYPE), "device file or FIFO"),
])
def test_unsafe_member_reason(info, problem):
    found = unsafe_member_reason(info)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_iter_members_streams_files_flags_unsafe_ones_and_skips_safe_folders(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in ((_info("images", tarfile.DIRTYPE), None),
                           (_info("images/a.jpg"), b"abc"),
                           (_info("../evil", tarfile.DIRTYPE), None),
                           (_info("images/l.jpg", tarfile.SYMTYPE, "a.jpg"), None)):
            info.size = len(data) if data else 0
            tar.addfile(info, io.BytesIO(data) if data else None)
    members = list(iter_members(archive))
    assert [(m.name, m.regular, m.problem is None) for m in members] == [
        ("images/a.jpg", True, True), ("../evil", False, False), ("images/l.jpg", False, True)]
    assert members[0].size == 3 and members[0].parts == ("images", "a.jpg")


def test_a_damaged_archive_is_an_archive_error_naming_the_file(tmp_path):
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(b"\x1f\x8b\x08 this is not gzip data at all")
    with pytest.raises(ArchiveError, match=r"images\.tar\.gz: cannot read it as a tar archive"):
        list(iter_members(archive))
