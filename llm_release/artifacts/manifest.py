"""The artifact manifest: what a published version contains, derivable from its metadata.

A published version is two objects under `<model>/<version>/`: `engine.tar` (the engine
directory) and `manifest.json`, uploaded last, so a version becomes visible only once complete.
The manifest is a pure function of the engine's metadata.json (which already holds a sha256 per
file), so an installed version yields the same bytes again without re-reading its files: a
no-op sync compares a listing's checksum of each remote manifest with the checksum of the
manifest derived locally, and moves no byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from llm_release.errors import SpecError
from llm_release.metadata import METADATA_FILE, EngineMetadata, metadata_bytes, read_metadata, sha256_bytes

MANIFEST_FILE = "manifest.json"
ARCHIVE_FILE = "engine.tar"
SCHEMA = 1


@dataclass(frozen=True)
class Manifest:
    model: str
    version: int
    files: dict[str, str]  # relative path -> "sha256:<hex>", metadata.json included
    metadata: EngineMetadata

    @classmethod
    def for_engine(cls, meta: EngineMetadata) -> "Manifest":
        files = dict(meta.files)
        files[METADATA_FILE] = sha256_bytes(metadata_bytes(meta))
        return cls(model=meta.model, version=meta.version, files=dict(sorted(files.items())), metadata=meta)

    @classmethod
    def of_engine_dir(cls, engine_dir) -> "Manifest":
        return cls.for_engine(read_metadata(Path(engine_dir)))

    def to_bytes(self) -> bytes:
        """Canonical bytes: equal manifests give equal bytes, so checksums compare them."""
        doc = {
            "schema": SCHEMA,
            "model": self.model,
            "version": self.version,
            "archive": ARCHIVE_FILE,
            "files": self.files,
            "metadata": self.metadata.to_dict(),
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def checksum(self, algorithm: str) -> str:
        """Hex digest of the canonical bytes (md5 for S3 ETags, sha256 elsewhere)."""
        return hashlib.new(algorithm, self.to_bytes()).hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + self.checksum("sha256")

    @property
    def archive_object(self) -> str:
        """The name the archive is stored under: derived from this manifest's digest, so two
        publishers of one version with different bytes never write the same object, and the
        manifest's conditional write alone decides which archive becomes the version. Versions
        published before this naming have theirs under `engine.tar` (ARCHIVE_FILE)."""
        return f"engine-{self.checksum('sha256')}.tar"

    @property
    def properties(self) -> dict[str, str]:
        """What stores attach as searchable properties/metadata of a published version."""
        meta = self.metadata
        return {
            "model": self.model,
            "version": str(self.version),
            "precision": meta.precision,
            "gpu_arch": meta.gpu_arch,
            "builder": meta.builder,
            "source_digest": meta.source_checkpoint_digest,
            "manifest_digest": self.digest,
        }

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "manifest") -> "Manifest":
        """Parse and validate a downloaded manifest; refuse anything that is not canonical."""
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise SpecError(where, f"not valid JSON: {exc}", "republish the version") from exc
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise SpecError(where, f"unknown manifest schema {doc.get('schema') if isinstance(doc, dict) else doc!r}",
                            f"this release system reads schema {SCHEMA}")
        meta = EngineMetadata.from_dict(doc.get("metadata"))
        manifest = cls.for_engine(meta)
        if (doc.get("model"), doc.get("version")) != (meta.model, meta.version):
            raise SpecError(where, f"names {doc.get('model')} v{doc.get('version')} but its metadata says "
                                   f"{meta.model} v{meta.version}", "republish the version")
        if doc.get("files") != manifest.files or manifest.to_bytes() != data:
            raise SpecError(where, "file list or encoding differs from the one its metadata implies",
                            "republish the version with this release system")
        return manifest
