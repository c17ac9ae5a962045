"""The engine metadata contract (`metadata.json`) and the durable file writes it relies on.

metadata.json travels with every engine: it says what the engine is (model, version,
precision, limits, parallelism, hardware, toolchain), where it came from (checkpoint digest,
build parameters) and what it is made of (a sha256 per file), so any copy of the engine can be
verified before it is published, synced or loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.fsutil import write_atomically

METADATA_FILE = "metadata.json"
#: Written by Python when a served engine imports its code; never part of the engine.
IGNORED_DIRS = frozenset({"__pycache__"})
MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """"sha256:<hex>" of a file's bytes, read in chunks so large engines fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a Z suffix, to the second."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_created_at(value: Any) -> str:
    """Accept only an ISO 8601 timestamp in UTC (Z or +00:00), so records sort and compare."""
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() is None or parsed.utcoffset().total_seconds() != 0:
        raise SpecError("created_at", f"{value!r} is not an ISO 8601 UTC timestamp",
                        "write it like 2026-01-31T12:00:00Z")
    return value


def check_model_name(model_name: Any) -> str:
    """Triton model names become directory names and URL parts: keep them plain."""
    if not isinstance(model_name, str) or not MODEL_NAME.fullmatch(model_name):
        raise SpecError("model_name", f"{model_name!r} is not a valid model name",
                        "use 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")
    return model_name


def check_version(version: Any) -> int:
    """Versions are positive integers: Triton's rule for version directories."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecError("version", f"{version!r} is not a positive integer",
                        "use a version number >= 1")
    return version


def engine_files(engine_dir: str | os.PathLike) -> list[str]:
    """Relative POSIX paths of an engine's files, sorted, without metadata.json and bytecode."""
    root = Path(engine_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != METADATA_FILE:
                found.append(rel)
    return sorted(found)


def hash_engine_files(engine_dir: str | os.PathLike) -> dict[str, str]:
    """{relative path: "sha256:<hex>"} for every file that metadata.json must list."""
    root = Path(engine_dir)
    return {rel: sha256_file(root / rel) for rel in engine_files(root)}


@dataclass(frozen=True)
class EngineMetadata:
    """What metadata.json holds (DESIGN section 4). Validated on construction."""

    model: str
    version: int
    precision: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    tp_size: int
    pp_size: int
    gpu_arch: str
    builder: str
    trtllm_version: str | None
    triton_image: str | None
    build_params: dict
    source_checkpoint_digest: str
    created_at: str
    files: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model", "precision", "gpu_arch", "builder"):
            _require_text(name, getattr(self, name))
        for name in ("trtllm_version", "triton_image"):
            if getattr(self, name) is not None:
                _require_text(name, getattr(self, name))
        for name in ("version", "max_batch_size", "max_input_len", "max_seq_len",
                     "tp_size", "pp_size"):
            _require_positive_int(name, getattr(self, name))
        if self.max_seq_len < self.max_input_len:
            raise SpecError("max_seq_len", f"{self.max_seq_len} is below max_input_len "
                            f"{self.max_input_len}", "rebuild the engine with valid limits")
        if not isinstance(self.build_params, dict):
            raise SpecError("build_params", "must be a mapping", "rebuild the engine")
        if not isinstance(self.source_checkpoint_digest, str) \
                or not _DIGEST.match(self.source_checkpoint_digest):
            raise SpecError("source_checkpoint_digest",
                            f"{self.source_checkpoint_digest!r} is not sha256:<64 hex>",
                            "rebuild the engine")
        check_created_at(self.created_at)
        _check_files(self.files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "EngineMetadata":
        """Parse metadata.json content, naming the first field that is missing or unknown."""
        if not isinstance(data, dict):
            raise SpecError("metadata", "is not a JSON object", "rebuild the engine")
        names = [f.name for f in fields(cls)]
        for name in names:
            if name not in data:
                raise SpecError(name, "is missing from metadata.json", "rebuild the engine")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise SpecError(unknown[0], "is not a metadata.json field",
                            f"known fields are {', '.join(names)}")
        return cls(**data)

    def same_build(self, other: "EngineMetadata") -> bool:
        """True when two metadata describe the same engine bytes, whenever they were built."""
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("created_at")
        theirs.pop("created_at")
        return mine == theirs


def _require_text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(name, f"{value!r} is not a non-empty string", "rebuild the engine")


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(name, f"{value!r} is not a positive integer", "rebuild the engine")


def _check_files(files: Any) -> None:
    if not isinstance(files, dict):
        raise SpecError("files", "must map relative paths to sha256 digests", "rebuild the engine")
    for rel, digest in files.items():
        parts = Path(rel).parts if isinstance(rel, str) else ()
        if not parts or Path(rel).is_absolute() or ".." in parts or rel == METADATA_FILE:
            raise SpecError("files", f"{rel!r} is not a relative path inside the engine",
                            "rebuild the engine")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise SpecError("files", f"{rel}: {digest!r} is not sha256:<64 hex>",
                            "rebuild the engine")


# -- durable writes -------------------------------------------------------------------------

# -- metadata.json --------------------------------------------------------------------------

def metadata_bytes(meta: EngineMetadata) -> bytes:
    """The canonical serialization: sorted keys, so equal metadata give equal bytes."""
    return (json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_metadata(engine_dir: str | os.PathLike, meta: EngineMetadata) -> Path:
    path = Path(engine_dir) / METADATA_FILE
    write_atomically(path, metadata_bytes(meta))
    return path


def read_metadata(engine_dir: str | os.PathLike) -> EngineMetadata:
    path = Path(engine_dir) / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError("metadata", f"{path} does not exist",
                        "point at an engine directory written by the builder") from exc
    except (OSError, ValueError) as exc:
        raise SpecError("metadata", f"{path} is not readable JSON: {exc}",
                        "rebuild the engine") from exc
    return EngineMetadata.from_dict(data)


def verify_engine(engine_dir: str | os.PathLike) -> EngineMetadata:
    """Check every file against metadata.json; raise ChecksumMismatch naming the first bad one.

    A missing file, an extra file and a changed file are all mismatches: an engine is exactly
    the files its metadata lists.
    """
    root = Path(engine_dir)
    meta = read_metadata(root)
    present = set(engine_files(root))
    for rel in sorted(set(meta.files) | present):
        if rel not in present:
            raise ChecksumMismatch(f"{root / rel}: listed in {METADATA_FILE} but missing")
        if rel not in meta.files:
            raise ChecksumMismatch(f"{root / rel}: present but not listed in {METADATA_FILE}")
        actual = sha256_file(root / rel)
        if actual != meta.files[rel]:
            raise ChecksumMismatch(f"{root / rel}: sha256 is {actual}, {METADATA_FILE} "
                                   f"records {meta.files[rel]}")
    return meta
