"""Where syncs run: one target per region (model repository, Triton, source), validated.

"Build once, upload once, every region syncs from it": each region has its own model
repository path (its PVC), its own Triton and its own source connection (a replica bucket, an
Artifactory edge). Targets come from configuration (an Airflow Variable in production) and are
validated before any sync starts, with errors naming the field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from llm_release.errors import SpecError

SOURCE_KINDS = ("s3", "artifactory", "oci")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # s3 | artifactory | oci
    conn_id: str
    bucket: str | None = None  # s3
    prefix: str = ""  # s3 / artifactory path prefix, oci namespace

    def to_dict(self) -> dict:
        return asdict(self)


# What a scheduled (not hand-triggered) sync does in a region: "sync" installs and loads what
# is new (production), "dry_run" only reports it (a laptop's local stack, a region being set up).
SCHEDULED_MODES = ("sync", "dry_run")


@dataclass(frozen=True)
class SyncTarget:
    region: str
    model_repository: str
    triton_conn_id: str | None
    source: SourceSpec
    scheduled: str = "sync"

    def to_dict(self) -> dict:
        return {"region": self.region, "model_repository": self.model_repository,
                "triton_conn_id": self.triton_conn_id, "source": self.source.to_dict(), "scheduled": self.scheduled}

    def dry_run_for(self, *, scheduled_run: bool, asked: bool) -> bool:
        """Whether a run changes nothing here: asked for, or a scheduled run in a dry-run region."""
        return asked or (scheduled_run and self.scheduled == "dry_run")


def _text(doc: dict, key: str, where: str, *, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{where}.{key}", f"{value!r} is not a non-empty string", f"set {key}")
    return value.strip()


def parse_source(doc, where: str) -> SourceSpec:
    if not isinstance(doc, dict):
        raise SpecError(where, f"{doc!r} is not an object", "give kind, conn_id and (for s3) bucket")
    kind = _text(doc, "kind", where)
    if kind not in SOURCE_KINDS:
        raise SpecError(f"{where}.kind", f"{kind!r} is not a known source", f"use one of {', '.join(SOURCE_KINDS)}")
    unknown = set(doc) - {"kind", "conn_id", "bucket", "prefix"}
    if unknown:
        raise SpecError(where, f"unknown keys {sorted(unknown)}", "allowed: kind, conn_id, bucket, prefix")
    bucket = _text(doc, "bucket", where, required=(kind == "s3"))
    prefix = doc.get("prefix", "") or ""
    if not isinstance(prefix, str) or ".." in prefix.split("/"):
        raise SpecError(f"{where}.prefix", f"{prefix!r} is not a plain path prefix", "use a/b/c without '..'")
    return SourceSpec(kind=kind, conn_id=_text(doc, "conn_id", where), bucket=bucket, prefix=prefix.strip("/"))


def parse_targets(doc) -> list[SyncTarget]:
    """Validate the targets configuration: a non-empty list of region objects, unique regions."""
    if not isinstance(doc, list) or not doc:
        raise SpecError("targets", "must be a non-empty list of regions",
                        'e.g. [{"region": "eu-west", "model_repository": "/models", "triton_conn_id": "triton_eu", '
                        '"source": {"kind": "s3", "conn_id": "aws_eu", "bucket": "engines"}}]')
    targets, seen = [], set()
    for i, item in enumerate(doc):
        where = f"targets[{i}]"
        if not isinstance(item, dict):
            raise SpecError(where, f"{item!r} is not an object", "give region, model_repository, triton_conn_id, source")
        unknown = set(item) - {"region", "model_repository", "triton_conn_id", "source", "scheduled"}
        if unknown:
            raise SpecError(where, f"unknown keys {sorted(unknown)}",
                            "allowed: region, model_repository, triton_conn_id, source, scheduled")
        scheduled = item.get("scheduled", "sync")
        if scheduled not in SCHEDULED_MODES:
            raise SpecError(f"{where}.scheduled", f"{scheduled!r} is not a scheduled-run mode",
                            "use sync (scheduled runs install and load) or dry_run (they only report)")
        region = _text(item, "region", where)
        if not _REGION.match(region):
            raise SpecError(f"{where}.region", f"{region!r} is not a region name", "use lower-case letters, digits and -")
        if region in seen:
            raise SpecError(f"{where}.region", f"{region!r} appears twice", "give each region once")
        seen.add(region)
        repo = _text(item, "model_repository", where)
        if not repo.startswith("/"):
            raise SpecError(f"{where}.model_repository", f"{repo!r} is not an absolute path", "use the PVC's mount path")
        targets.append(SyncTarget(region=region, model_repository=repo,
                                  triton_conn_id=_text(item, "triton_conn_id", where, required=False),
                                  source=parse_source(item.get("source"), f"{where}.source"), scheduled=scheduled))
    return targets
