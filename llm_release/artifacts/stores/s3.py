"""S3 (or any S3 API) as an artifact store, through a boto3 client.

The client comes from the caller: in Airflow from the amazon provider's S3Hook (credentials
from the connection), elsewhere from boto3 with the environment's credentials. Archives go up
with boto3's managed transfer (multipart above the threshold, parallel parts) and carry their
sha256 and the version's properties as object metadata; the manifest goes last with a
conditional put, so two publishers can never both "win" a version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from llm_release.artifacts.manifest import ARCHIVE_FILE, MANIFEST_FILE
from llm_release.artifacts.stores.base import ArtifactStore, Listing, ProgressFn, RemoteVersion, parse_manifest_key
from llm_release.errors import ArtifactAuthError, ArtifactError, ArtifactImmutable, ArtifactNotFound

LOG = logging.getLogger("llm_release.artifacts.s3")
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024
_AUTH_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "403", "401"}


def _byte_counter(total: int, progress: ProgressFn | None):
    """boto3 reports increments; our progress callbacks take (done, total)."""
    done = 0

    def callback(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    return callback


def _s3_metadata(properties: dict[str, str]) -> dict[str, str]:
    # S3 user metadata keys are lower-case ASCII; values must be ASCII.
    return {k.lower().replace("_", "-"): str(v) for k, v in properties.items()}


class S3Store(ArtifactStore):
    kind = "s3"

    def __init__(self, client, bucket: str, prefix: str = "", *, max_concurrency: int = 8):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.max_concurrency = max_concurrency

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, model: str, version: int, name: str) -> str:
        return "/".join(p for p in (self.prefix, model, str(version), name) if p)

    def _transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK,
                              max_concurrency=self.max_concurrency, use_threads=True)

    def _fail(self, exc, what: str):
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in _AUTH_CODES:
            raise ArtifactAuthError(f"{self.describe()}: {what} was refused ({code}); check the connection's credentials") from exc
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ArtifactNotFound(f"{self.describe()}: {what}: not found ({code})") from exc
        raise ArtifactError(f"{self.describe()}: {what} failed: {code or exc}") from exc

    # -- listing --------------------------------------------------------------------------
    def list_published(self) -> Listing:
        from botocore.exceptions import BotoCoreError, ClientError

        listing = Listing()
        manifests: dict[tuple[str, int], str] = {}
        sizes: dict[tuple[str, int], int] = {}
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                listing.requests += 1
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(base):]
                    folder, _, name = relative.rpartition("/")
                    if name == ARCHIVE_FILE or (name.startswith("engine-") and name.endswith(".tar")):
                        parsed = parse_manifest_key(f"{folder}/{MANIFEST_FILE}")
                        if isinstance(parsed, tuple):
                            # One archive: its size. Several (a publisher that lost a race left its
                            # own): which one the manifest names is known once it is read.
                            sizes[parsed] = obj["Size"] if parsed not in sizes else None
                        continue
                    if not relative.endswith(MANIFEST_FILE):
                        continue
                    parsed = parse_manifest_key(relative)
                    if isinstance(parsed, str):
                        listing.rejected.append(f"{obj['Key']}: {parsed}")
                        continue
                    manifests[parsed] = obj["ETag"].strip('"')
        except ClientError as exc:
            self._fail(exc, "listing")
        except BotoCoreError as exc:
            raise ArtifactError(f"{self.describe()}: listing failed: {exc}") from exc
        for (model, version), etag in manifests.items():
            # The ETag of a single-part object is the md5 of its bytes (we always put manifests
            # in one part); a multipart ETag ("<hex>-<parts>") says nothing: compare by content.
            checksum = None if "-" in etag else etag
            listing.versions[(model, version)] = RemoteVersion(model, version, checksum, "md5", sizes.get((model, version)))
        return listing

    # -- reads ----------------------------------------------------------------------------
    def fetch_manifest(self, model: str, version: int) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(model, version, MANIFEST_FILE))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            self._fail(exc, f"reading the manifest of {model} v{version}")

    def download_archive(self, model: str, version: int, dest: Path, progress: ProgressFn | None = None, *,
                         name: str = ARCHIVE_FILE) -> int:
        from botocore.exceptions import ClientError

        key = self._key(model, version, name)
        try:
            total = self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
            self.client.download_file(self.bucket, key, str(dest), Callback=_byte_counter(total, progress),
                                      Config=self._transfer_config())
        except ClientError as exc:
            self._fail(exc, f"downloading {model} v{version}")
        return Path(dest).stat().st_size

    # -- writes ---------------------------------------------------------------------------
    def upload_archive(self, model: str, version: int, source: Path, *, sha256: str,
                       properties: dict[str, str], progress: ProgressFn | None = None,
                       name: str = ARCHIVE_FILE) -> None:
        from botocore.exceptions import ClientError

        callback = _byte_counter(Path(source).stat().st_size, progress)
        metadata = _s3_metadata({**properties, "archive_sha256": sha256})
        try:
            self.client.upload_file(str(source), self.bucket, self._key(model, version, name),
                                    ExtraArgs={"Metadata": metadata, "ContentType": "application/x-tar"},
                                    Callback=callback, Config=self._transfer_config())
        except ClientError as exc:
            self._fail(exc, f"uploading {model} v{version}")

    def remove_archive(self, model: str, version: int, name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(model, version, name))
        except ClientError as exc:
            self._fail(exc, f"removing {name} of {model} v{version}")

    def upload_manifest(self, model: str, version: int, data: bytes, *, properties: dict[str, str]) -> None:
        from botocore.exceptions import ClientError

        key = self._key(model, version, MANIFEST_FILE)
        existing = self.fetch_manifest(model, version)
        if existing is not None:
            self._require_same(existing, data, model, version)
            return
        try:
            # Conditional put: if another publisher got there between our read and our write,
            # S3 answers 412 and we compare with what it wrote instead of overwriting it.
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                                   ContentType="application/json", Metadata=_s3_metadata(properties))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                self._require_same(self.fetch_manifest(model, version) or b"", data, model, version)
                return
            self._fail(exc, f"publishing the manifest of {model} v{version}")

    @staticmethod
    def _require_same(existing: bytes, data: bytes, model: str, version: int) -> None:
        if existing != data:
            raise ArtifactImmutable(
                f"{model} version {version} is already published with other content; "
                "published versions are immutable: publish a new version number")
