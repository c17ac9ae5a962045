"""Durable, atomic file writes: readers (Triton, Envoy, a crashed run's successor) see the old
bytes or the new, never a partial file. And an exclusive lock across processes, with a bounded
wait, for read-modify-write cycles on shared files."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str | os.PathLike, data: bytes) -> None:
    """Write a new file and fsync it (the caller fsyncs the directory once it is complete)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path: str | os.PathLike, data: bytes | str, *, mode: int | None = None) -> None:
    """Replace a file so readers see the old bytes or the new, never a partial write:
    temp file in the same directory, fsync, rename, fsync the directory."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def exclusive_lock(path: str | os.PathLike, *, timeout_s: float, poll_s: float = 0.01) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the `with` block.

    The lock is held by the open file, so it is released when the block ends or the process
    dies, never left behind by a crash. Waits at most `timeout_s` for another holder, polling
    (the wait grows from `poll_s` to 0.1 s), then raises TimeoutError naming the file. The file
    is never removed: removing a lock file while another process waits on it would let two
    processes hold "the" lock at once.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        wait = poll_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} stayed locked by another holder for {timeout_s:g} s") from None
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                wait = min(wait * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock
