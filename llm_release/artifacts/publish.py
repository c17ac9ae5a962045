"""Publish a built engine once, immutably: archive first, manifest last.

Checks every file's sha256 before anything leaves the machine. A retry after a failure (or of
a finished publish) is safe: identical bytes make it a no-op, other bytes under a published
version are refused, and a half-uploaded archive stays invisible because its manifest is not
there yet.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llm_release.artifacts.archive import pack_engine
from llm_release.artifacts.manifest import ARCHIVE_FILE, Manifest
from llm_release.artifacts.stores.base import ArtifactStore, ProgressLog
from llm_release.errors import ArtifactError, ArtifactImmutable
from llm_release.metadata import verify_engine

LOG = logging.getLogger("llm_release.artifacts.publish")


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: int
    store: str
    manifest_digest: str
    archive_bytes: int
    uploaded: bool  # False when the identical version was already published
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _drop_own_archive(store: ArtifactStore, model: str, version: int, name: str, log: logging.Logger) -> None:
    """Remove the archive a lost race left behind, or say where it stays (never installed: no
    manifest names it)."""
    try:
        store.remove_archive(model, version, name)
        log.info("%s v%s: removed this publisher's archive %s (the version is another's)", model, version, name)
    except (NotImplementedError, ArtifactError) as exc:
        log.warning("%s v%s: this publisher's archive %s stays in %s, named by no manifest (%s); it is never "
                    "installed and may be deleted", model, version, name, store.describe(), exc)


def publish_engine(engine_dir, store: ArtifactStore, *, work_dir: Path | None = None,
                   log: logging.Logger = LOG) -> PublishResult:
    started = time.monotonic()
    meta = verify_engine(engine_dir)
    manifest = Manifest.for_engine(meta)
    data = manifest.to_bytes()
    where = f"{meta.model} v{meta.version} on {store.describe()}"
    existing = store.fetch_manifest(meta.model, meta.version)
    if existing is not None:
        if existing != data:
            raise ArtifactImmutable(f"{where} is already published with other content "
                                    f"(published {Manifest.from_bytes(existing).digest}, this engine {manifest.digest}); "
                                    "published versions are immutable: build and publish a new version")
        log.info("%s is already published with these bytes (%s); nothing to do", where, manifest.digest)
        return PublishResult(meta.model, meta.version, store.describe(), manifest.digest, 0, False,
                             round(time.monotonic() - started, 3))
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="llm-release-publish-") as tmp:
        archive = Path(tmp) / ARCHIVE_FILE
        pack_engine(Path(engine_dir), archive)
        size = archive.stat().st_size
        log.info("publishing %s: %d files, archive %d bytes", where, len(manifest.files), size)
        store.upload_archive(meta.model, meta.version, archive, sha256=_sha256_of(archive),
                             properties=manifest.properties, progress=ProgressLog(log, f"upload {meta.model} v{meta.version}"),
                             name=manifest.archive_object)
    try:
        store.upload_manifest(meta.model, meta.version, data, properties=manifest.properties)
    except ArtifactImmutable:
        # Another publisher's manifest won the conditional write between our check and ours. Our
        # archive is under a name of its own (our manifest's digest): the winner's is untouched.
        _drop_own_archive(store, meta.model, meta.version, manifest.archive_object, log)
        published = store.fetch_manifest(meta.model, meta.version)
        theirs = Manifest.from_bytes(published).digest if published else "unknown"
        raise ArtifactImmutable(f"{where} was published by another publisher while this one uploaded "
                                f"(published {theirs}, this engine {manifest.digest}); published versions are "
                                "immutable: build and publish a new version") from None
    log.info("published %s as %s", where, manifest.digest)
    return PublishResult(meta.model, meta.version, store.describe(), manifest.digest, size, True,
                         round(time.monotonic() - started, 3))
