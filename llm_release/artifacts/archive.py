"""Engine archives: deterministic tar out, safe and verified extraction in.

Packing: an uncompressed tar (engines are already dense binaries; gzip would cost minutes of
CPU for a few percent), members sorted, owners, modes and times normalised, so equal engines
give equal archives. Unpacking refuses anything that could write outside the target or that
the manifest does not list, names the offending member, and checks every file's sha256 while
it streams to disk, so a bad byte is caught before the version is installed.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path, PurePosixPath

from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.fsutil import fsync_dir
from llm_release.metadata import METADATA_FILE, engine_files

_CHUNK = 1 << 20


def pack_engine(engine_dir: Path, out: Path) -> None:
    """Write `engine_dir` (its engine files and metadata.json) as a deterministic tar."""
    engine_dir = Path(engine_dir)
    names = sorted(engine_files(engine_dir) + [METADATA_FILE])
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in names:
            path = engine_dir / rel
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        return "is an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "contains '..'"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "is a device or fifo"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file"
    return None


def extract_verified(archive: Path, target: Path, expected: dict[str, str], *, where: str = "archive") -> int:
    """Extract `archive` into the empty directory `target`, verifying each file against
    `expected` (relative path -> "sha256:<hex>"); return the number of bytes written.

    Refused (SpecError naming the member): absolute paths, '..', links, devices, members the
    manifest does not list, duplicates. ChecksumMismatch for a file whose bytes differ, and for
    files the manifest lists that the archive lacks.
    """
    target.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    written = 0
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            problem = _member_problem(member)
            if problem:
                raise SpecError(where, f"member {member.name!r} {problem}", "the artifact is unsafe: republish it")
            if member.isdir():
                continue
            name = str(PurePosixPath(member.name))
            if name not in expected:
                raise SpecError(where, f"member {name!r} is not listed in the manifest", "republish the version")
            if name in seen:
                raise SpecError(where, f"member {name!r} appears twice", "republish the version")
            seen.add(name)
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            source = tar.extractfile(member)
            with open(dest, "wb") as out:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + digest.hexdigest()
            if actual != expected[name]:
                raise ChecksumMismatch(f"{where}: {name} has sha256 {actual}, the manifest says {expected[name]}")
    missing = sorted(set(expected) - seen)
    if missing:
        raise ChecksumMismatch(f"{where}: files listed in the manifest are missing from the archive: {missing}")
    for directory in sorted({(target / n).parent for n in seen} | {target}):
        fsync_dir(directory)
    return written
