"""Unsafe or wrong archives are refused, naming the member, and nothing lands outside the target."""

import io
import tarfile

import pytest

from llm_release.artifacts.archive import extract_verified
from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.metadata import sha256_bytes


def make_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
            elif kind == "device":
                info.type = tarfile.CHRTYPE
                tar.addfile(info)


GOOD = b"weights"


@pytest.mark.parametrize("member, kind, payload, words", [
    ("../escape.txt", "file", GOOD, "contains '..'"),
    ("engine/../../escape.txt", "file", GOOD, "contains '..'"),
    ("/etc/escape.txt", "file", GOOD, "absolute path"),
    ("engine/link", "symlink", "/etc/passwd", "is a link"),
    ("engine/hard", "hardlink", "../../etc/passwd", "is a link"),
    ("engine/dev", "device", None, "device"),
    ("engine/extra.bin", "file", GOOD, "not listed in the manifest"),
])
def test_unsafe_members_are_refused_by_name(tmp_path, member, kind, payload, words):
    archive = tmp_path / "a.tar"
    make_tar(archive, [("engine/weights.bin", "file", GOOD), (member, kind, payload)])
    target = tmp_path / "out" / "stage"
    with pytest.raises(SpecError) as err:
        extract_verified(archive, target, {"engine/weights.bin": sha256_bytes(GOOD)})
    assert repr(member) in str(err.value)
    assert words in str(err.value)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "escape.txt").exists()


def test_a_byte_changed_is_a_checksum_mismatch_naming_the_file(tmp_path):
    archive = tmp_path / "a.tar"
    make_tar(archive, [("engine/weights.bin", "file", b"weightz")])
    with pytest.raises(ChecksumMismatch) as err:
        extract_verified(archive, tmp_path / "stage", {"engine/weights.bin": sha256_bytes(GOOD)})
    assert "engine/weights.bin" in str(err.value)


def test_a_missing_file_is_reported(tmp_path):
    archive = tmp_path / "a.tar"
    make_tar(archive, [("engine/weights.bin", "file", GOOD)])
    expected = {"engine/weights.bin": sha256_bytes(GOOD), "model.py": sha256_bytes(b"x")}
    with pytest.raises(ChecksumMismatch) as err:
        extract_verified(archive, tmp_path / "stage", expected)
    assert "model.py" in str(err.value)


def test_a_good_archive_extracts_and_counts_bytes(tmp_path):
    archive = tmp_path / "a.tar"
    make_tar(archive, [("engine/weights.bin", "file", GOOD)])
    written = extract_verified(archive, tmp_path / "stage", {"engine/weights.bin": sha256_bytes(GOOD)})
    assert written == len(GOOD)
    assert (tmp_path / "stage" / "engine" / "weights.bin").read_bytes() == GOOD
