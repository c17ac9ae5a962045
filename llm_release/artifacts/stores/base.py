"""The interface every artifact store implements, and what a listing returns.

A store lays a version out as `<prefix>/<model>/<version>/{engine.tar,manifest.json}` (or its
own equivalent) and makes the manifest visible last. `list_published()` is ONE listing per
source (paginated where the API pages), never one request per file: a sync of hundreds of
versions must cost a handful of requests when nothing changed.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from llm_release.artifacts.manifest import ARCHIVE_FILE
from llm_release.metadata import MODEL_NAME

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class RemoteVersion:
    """A published version as a listing shows it: enough to decide whether to download."""

    model: str
    version: int
    manifest_checksum: str | None  # hex digest of manifest.json with the store's algorithm; None: unknown
    checksum_algorithm: str  # "md5" (S3 ETag of a single-part object) or "sha256"
    archive_size: int | None = None


@dataclass
class Listing:
    """One listing of a store: complete versions, and entries refused with the reason why."""

    versions: dict[tuple[str, int], RemoteVersion] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)  # e.g. "models/m/v2/manifest.json: version 'v2' is not numeric"
    requests: int = 0  # HTTP requests the listing took (pages)

    def only(self, models) -> "Listing":
        """The part of the listing about `models` (handed to per-model tasks instead of re-listing)."""
        wanted = set(models)
        return Listing({k: v for k, v in self.versions.items() if k[0] in wanted}, [], 0)

    def to_dict(self) -> dict:
        return {"versions": [asdict(v) for v in self.versions.values()], "rejected": list(self.rejected),
                "requests": self.requests}

    @classmethod
    def from_dict(cls, doc: dict) -> "Listing":
        versions = [RemoteVersion(**v) for v in doc.get("versions", [])]
        return cls({(v.model, v.version): v for v in versions}, list(doc.get("rejected", [])),
                   int(doc.get("requests", 0)))


def parse_manifest_key(relative: str) -> tuple[str, int] | str:
    """`<model>/<version>/manifest.json` -> (model, version), or the reason it is refused."""
    parts = relative.strip("/").split("/")
    if len(parts) != 3 or parts[2] != "manifest.json":
        return "not a <model>/<version>/manifest.json path"
    model, version = parts[0], parts[1]
    if not MODEL_NAME.match(model):
        return f"model name {model!r} is not a valid Triton model name"
    if not version.isdigit() or version.startswith("0"):
        return f"version {version!r} is not a positive integer"
    return model, int(version)


class ArtifactStore(abc.ABC):
    """Where published engines live. Implementations hold no Airflow objects."""

    kind: str = "abstract"

    @abc.abstractmethod
    def describe(self) -> str:
        """Human-readable location, for logs and errors (never credentials)."""

    @abc.abstractmethod
    def list_published(self) -> Listing:
        """Every complete published version (manifest present), from one listing."""

    @abc.abstractmethod
    def fetch_manifest(self, model: str, version: int) -> bytes | None:
        """The manifest's bytes, or None when the version is not (completely) published."""

    @abc.abstractmethod
    def download_archive(self, model: str, version: int, dest: Path, progress: ProgressFn | None = None, *,
                         name: str = ARCHIVE_FILE) -> int:
        """Write the archive stored as `name` to `dest`; return bytes written (ArtifactNotFound
        when there is none of that name)."""

    @abc.abstractmethod
    def upload_archive(self, model: str, version: int, source: Path, *, sha256: str,
                       properties: dict[str, str], progress: ProgressFn | None = None,
                       name: str = ARCHIVE_FILE) -> None:
        """Upload the archive as `name` (not yet visible to syncs: the manifest is not there)."""

    def remove_archive(self, model: str, version: int, name: str) -> None:
        """Delete an archive no manifest names (a publisher that lost the race for a version
        removes its own). Stores that cannot say so; the caller then lists it as left behind."""
        raise NotImplementedError(f"{self.kind} stores do not remove archives")

    @abc.abstractmethod
    def upload_manifest(self, model: str, version: int, data: bytes, *, properties: dict[str, str]) -> None:
        """Upload the manifest last: from now on the version is published."""


class ProgressLog:
    """Logs bytes, percent and rate at most every `interval_s` (and at the end)."""

    def __init__(self, log: logging.Logger, what: str, *, interval_s: float = 2.0):
        self.log = log
        self.what = what
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.interval_s:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        percent = 100.0 * done / total if total else 100.0
        self.log.info("%s: %s of %s (%.0f%%) at %s/s", self.what, human_bytes(done), human_bytes(total),
                      percent, human_bytes(done / elapsed))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
