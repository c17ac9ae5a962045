"""JFrog Artifactory as an artifact store, through its documented REST API and `requests` only.

A version lives in a generic repository as `<prefix>/<model>/<version>/{engine.tar,manifest.json}`.
The JFrog REST API calls used here (https://jfrog.com/help/r/jfrog-rest-apis/):

- Deploy Artifact, `PUT /<repo>/<path>;key=value...`: checksum headers make Artifactory refuse
  (409) bytes that differ from what we hashed; matrix parameters become item properties.
- File List, `GET /api/storage/<repo>/<folder>?list&deep=1...`: every file under the prefix with
  its sha1/sha2 in ONE request, so a no-op sync costs one request whatever the number of versions.
- Retrieve Artifact, `GET /<repo>/<path>`: the download carries `X-Checksum-Sha256`, checked
  against the bytes written.
- File Info and Item Properties, `GET /api/storage/<repo>/<path>[?properties]`.

Client errors (401/403/404/409) are final; 5xx answers and connection failures are retried with
exponential backoff, which is safe because every request made here is idempotent (GETs, and
PUTs of the same bytes to the same path). No credential ever reaches a log line or a message.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from llm_release.artifacts.manifest import ARCHIVE_FILE, MANIFEST_FILE
from llm_release.artifacts.stores.base import ArtifactStore, Listing, ProgressFn, RemoteVersion, parse_manifest_key
from llm_release.errors import (ArtifactAuthError, ArtifactError, ArtifactImmutable, ArtifactNotFound,
                                ChecksumMismatch, SpecError)

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_LIST_QUERY = "list&deep=1&listFolders=0&mdTimestamps=0&includeRootPath=0"
#: Failures worth another attempt: the server or the network, never our request.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class _BearerAuth(AuthBase):
    """`Authorization: Bearer <token>`, attached per request so a caller's session stays untouched."""

    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(***)"


class _ProgressReader:
    """A PUT body read in chunks as requests sends it (never all in memory), reporting progress."""

    def __init__(self, fh: BinaryIO, total: int, progress: ProgressFn | None):
        self._fh = fh
        self._total = total
        self._done = 0
        self._progress = progress

    def __len__(self) -> int:  # lets requests send Content-Length instead of chunked encoding
        return self._total

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(_CHUNK if size is None or size < 0 else size)
        self._done += len(block)
        if self._progress and block:
            self._progress(self._done, self._total)
        return block

    def close(self) -> None:
        self._fh.close()


def _file_checksums(path: Path) -> dict[str, str]:
    """md5, sha1 and sha256 of a file in one read: Artifactory verifies each we send."""
    digests = {"md5": hashlib.md5(usedforsecurity=False), "sha1": hashlib.sha1(usedforsecurity=False),
               "sha256": hashlib.sha256()}
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


def _bytes_checksums(data: bytes) -> dict[str, str]:
    return {"md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
            "sha1": hashlib.sha1(data, usedforsecurity=False).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


def _matrix_params(properties: dict[str, str]) -> str:
    """`;key=value...` with keys and values URL-encoded, so `;`, `=`, `,` and `/` in a value
    cannot split it into other properties, values or path segments."""
    return "".join(f";{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in sorted(properties.items()))


def _redact(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _artifactory_message(response: requests.Response) -> str:
    """Artifactory's own words from its `{"errors": [{"status", "message"}]}` body, else the text."""
    try:
        errors = response.json().get("errors") or []
        messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    except (ValueError, AttributeError):
        messages = []
    return "; ".join(messages) or response.text.strip()[:300] or response.reason or "no message"


def _strip_algorithm(sha256: str) -> str:
    return sha256.split(":", 1)[1] if sha256.startswith("sha256:") else sha256


class ArtifactoryStore(ArtifactStore):
    """Published engines in one generic Artifactory repository, under an optional prefix."""

    kind = "artifactory"

    def __init__(self, base_url: str, repo: str, *, prefix: str = "", token: str | None = None,
                 username: str | None = None, password: str | None = None, timeout_s: float = 60,
                 retries: int = 4, backoff_s: float = 0.5, session: requests.Session | None = None):
        if not repo or "/" in repo:
            raise SpecError("repo", f"{repo!r} is not an Artifactory repository key", "name one generic repository")
        if token and (username or password):
            raise SpecError("credentials", "both a token and a user/password were given",
                            "use an access token, or a user and password, not both")
        self.base_url = base_url.rstrip("/")
        self.repo = repo
        self.prefix = prefix.strip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.session = session or requests.Session()
        self._auth = _BearerAuth(token) if token else HTTPBasicAuth(username, password or "") if username else None

    def describe(self) -> str:
        return f"artifactory {_redact(self.base_url)}/{self.repo}/{self.prefix}".rstrip("/")

    # -- paths ----------------------------------------------------------------------------------

    def item_path(self, model: str, version: int, name: str) -> str:
        """Repository-relative path of one file of a version."""
        return "/".join(p for p in (self.prefix, model, str(version), name) if p)

    def _artifact_url(self, path: str, properties: dict[str, str] | None = None) -> str:
        return f"{self.base_url}/{quote(self.repo, safe='')}/{quote(path)}{_matrix_params(properties or {})}"

    def _storage_url(self, path: str, query: str = "") -> str:
        url = f"{self.base_url}/api/storage/{quote(self.repo, safe='')}"
        url += f"/{quote(path)}" if path else ""
        return f"{url}?{query}" if query else url

    # -- ArtifactStore --------------------------------------------------------------------------

    def list_published(self) -> Listing:
        """Every complete version under the prefix, from ONE File List request."""
        listing = Listing(requests=1)
        response = self._call("GET", self._storage_url(self.prefix, _LIST_QUERY), missing_ok=True)
        if response is None:
            log.info("%s does not exist yet: nothing is published there", self.describe())
            return listing
        files = [f for f in response.json().get("files", []) if str(f.get("folder")).lower() != "true"]
        sizes: dict[str, int | None] = {}
        for f in files:
            folder, _, name = f["uri"].strip("/").rpartition("/")
            if name == ARCHIVE_FILE or (name.startswith("engine-") and name.endswith(".tar")):
                # several archives in one version: which the manifest names is known once read
                sizes[folder] = int(f["size"]) if folder not in sizes else None
        for entry in files:
            relative = entry["uri"].strip("/")
            if relative.rpartition("/")[2] != MANIFEST_FILE:
                continue
            self._add_version(listing, relative, entry, sizes.get(relative.rpartition("/")[0]))
        return listing

    def _add_version(self, listing: Listing, relative: str, entry: dict, archive_size: int | None) -> None:
        """One manifest entry of the file list -> a RemoteVersion, or a rejection with the reason."""
        where = "/".join(p for p in (self.prefix, relative) if p)
        parsed = parse_manifest_key(relative)
        if isinstance(parsed, str):
            listing.rejected.append(f"{where}: {parsed}")
            return
        # Artifactory lists sha2 (sha256) since 5.5; older servers list sha1 only, which compares
        # as well (Manifest.checksum("sha1")); with neither, None makes a sync fetch the manifest.
        algorithm, checksum = ("sha1", entry["sha1"]) if entry.get("sha1") and not entry.get("sha2") \
            else ("sha256", entry.get("sha2"))
        model, version = parsed
        listing.versions[(model, version)] = RemoteVersion(model, version, manifest_checksum=checksum,
                                                           checksum_algorithm=algorithm, archive_size=archive_size)

    def fetch_manifest(self, model: str, version: int) -> bytes | None:
        response = self._call("GET", self._artifact_url(self.item_path(model, version, MANIFEST_FILE)),
                              missing_ok=True)
        return None if response is None else response.content

    def download_archive(self, model: str, version: int, dest: Path, progress: ProgressFn | None = None, *,
                         name: str = ARCHIVE_FILE) -> int:
        """Stream the archive to `dest`, checking the bytes written against `X-Checksum-Sha256`.

        A transfer that breaks half-way is restarted from the beginning (the GET is idempotent);
        a checksum difference is not retried: it means the stored bytes are not the deployed ones.
        """
        path = self.item_path(model, version, name)
        written = 0

        def write(response: requests.Response) -> None:
            nonlocal written
            written = self._write_verified(response, path, Path(dest), progress)

        self._call("GET", self._artifact_url(path), consume=write)
        return written

    def _write_verified(self, response: requests.Response, path: str, dest: Path,
                        progress: ProgressFn | None) -> int:
        total = int(response.headers.get("Content-Length") or 0)
        expected = (response.headers.get("X-Checksum-Sha256") or "").lower()
        if not expected:
            # A download redirected to cloud storage (large files, "download redirect" on) comes
            # without Artifactory's checksum headers: ask Artifactory for the file's sha256
            # instead of trusting the bytes unchecked.
            info = self._call("GET", self._storage_url(path)).json()
            expected = str(info.get("checksums", {}).get("sha256") or "").lower()
            if not expected:
                raise ChecksumMismatch(f"{self.repo}/{path}: Artifactory records no sha256 for it and the download "
                                       "carried none; its bytes cannot be verified: redeploy it (or publish a new "
                                       "version)")
        digest = hashlib.sha256()
        done = 0
        with open(dest, "wb") as out:
            for block in response.iter_content(_CHUNK):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total or done)
        if expected and digest.hexdigest() != expected:
            dest.unlink(missing_ok=True)  # nobody may install these bytes by mistake
            raise ChecksumMismatch(f"{self.repo}/{path}: downloaded bytes have sha256 {digest.hexdigest()}, "
                                   f"Artifactory records {expected}; the stored artifact is damaged: "
                                   "restore it in Artifactory or publish a new version")
        return done

    def upload_archive(self, model: str, version: int, source: Path, *, sha256: str,
                       properties: dict[str, str], progress: ProgressFn | None = None,
                       name: str = ARCHIVE_FILE) -> None:
        """Deploy the archive with its checksums; an identical archive already there is left alone,
        and a published version's archive is never replaced by other bytes."""
        path = self.item_path(model, version, name)
        checksums = _file_checksums(Path(source))
        if checksums["sha256"] != _strip_algorithm(sha256):
            raise ChecksumMismatch(f"{source}: sha256 is {checksums['sha256']}, the caller expected "
                                   f"{_strip_algorithm(sha256)}; the file changed since it was hashed: "
                                   "rebuild the archive")
        existing = self._call("GET", self._storage_url(path), missing_ok=True)
        if existing is not None:
            if existing.json().get("checksums", {}).get("sha256") == checksums["sha256"]:
                log.info("%s v%s: %s already holds this archive, not uploading it again",
                         model, version, self.describe())
                return
            if self.fetch_manifest(model, version) is not None:
                raise ArtifactImmutable(f"{model} v{version} is already published in {self.describe()} with another "
                                        "archive; published versions are immutable: publish a new version number")
        self._deploy(path, lambda: open(source, "rb"), Path(source).stat().st_size, checksums, properties, progress)

    def upload_manifest(self, model: str, version: int, data: bytes, *, properties: dict[str, str]) -> None:
        """Publish the version by deploying its manifest, unless one is there already: the same
        bytes make this a no-op, other bytes are refused (ArtifactImmutable).

        Artifactory has no conditional PUT, so two publishers racing on one version can both pass
        the check; the release DAG runs one publish per model at a time.
        """
        existing = self.fetch_manifest(model, version)
        if existing == data:
            log.info("%s v%s: the same manifest is already published in %s", model, version, self.describe())
            return
        if existing is not None:
            raise ArtifactImmutable(
                f"{model} v{version} is already published in {self.describe()} with another manifest "
                f"(sha256 {hashlib.sha256(existing).hexdigest()}, this one {hashlib.sha256(data).hexdigest()}); "
                "published versions are immutable: publish a new version number")
        try:
            self._deploy(self.item_path(model, version, MANIFEST_FILE), lambda: io.BytesIO(data), len(data),
                         _bytes_checksums(data), properties, None)
        except (ArtifactAuthError, ArtifactNotFound):
            # A publisher token without Delete may not replace a manifest: if another publisher's
            # landed between the check above and this deploy, the refusal is the race lost, which
            # the missing permission turned from a silent overwrite into an answer.
            landed = self.fetch_manifest(model, version)
            if landed == data:
                return
            if landed is not None:
                raise ArtifactImmutable(
                    f"{model} v{version} was published in {self.describe()} by another publisher while this one "
                    f"uploaded (sha256 {hashlib.sha256(landed).hexdigest()}, this one "
                    f"{hashlib.sha256(data).hexdigest()}); published versions are immutable: publish a new "
                    "version number") from None
            raise

    # -- storage information --------------------------------------------------------------------

    def item_info(self, model: str, version: int, name: str) -> dict:
        """Artifactory's File Info of one file of a version (size, checksums, originalChecksums, ...)."""
        return self._call("GET", self._storage_url(self.item_path(model, version, name))).json()

    def properties(self, model: str, version: int, name: str = MANIFEST_FILE) -> dict[str, list[str]]:
        """The properties of one file of a version (the manifest by default), each a list of values.

        Artifactory answers 404 both for a missing item and for an item without properties, so
        both give {}.
        """
        response = self._call("GET", self._storage_url(self.item_path(model, version, name), "properties"),
                              missing_ok=True)
        return {} if response is None else dict(response.json().get("properties", {}))

    # -- HTTP -----------------------------------------------------------------------------------

    def _deploy(self, path: str, open_source: Callable[[], BinaryIO], size: int, checksums: dict[str, str],
                properties: dict[str, str], progress: ProgressFn | None) -> None:
        """PUT the bytes `open_source()` gives (opened anew for each attempt) with checksum
        headers, and the properties as matrix parameters."""
        headers = {"X-Checksum-Sha256": checksums["sha256"], "X-Checksum-Sha1": checksums["sha1"],
                   "X-Checksum": checksums["md5"], "Content-Type": "application/octet-stream"}
        response = self._call("PUT", self._artifact_url(path, properties), headers=headers,
                              data=lambda: _ProgressReader(open_source(), size, progress))
        # Under a repository's "server" checksum policy Artifactory stores what arrived even when
        # it does not match the headers: compare what it says it stored with what was sent.
        stored = (response.json().get("checksums") or {}) if response is not None else {}
        if str(stored.get("sha256", "")).lower() != checksums["sha256"]:
            raise ChecksumMismatch(f"{self.repo}/{path}: Artifactory stored sha256 {stored.get('sha256')!r}, this "
                                   f"client sent {checksums['sha256']}: the bytes were damaged on the way; "
                                   "publish again (nothing refers to the damaged file yet)")
        log.info("deployed %s/%s (%d bytes) to %s", self.repo, path, size, _redact(self.base_url))

    def _call(self, method: str, url: str, *, headers: dict | None = None,
              data: Callable[[], _ProgressReader] | None = None, missing_ok: bool = False,
              consume: Callable[[requests.Response], None] | None = None) -> requests.Response | None:
        """One request with retries on 5xx and connection failures; client errors are final.

        `data()` builds the body anew for each attempt; `consume(response)` runs inside the retry,
        so a download broken half-way starts again. Returns None for a 404 when `missing_ok`.
        """
        where = _redact(url.split("?", 1)[0].split(";", 1)[0])  # no query, no properties
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning("%s %s: %s, retry %d of %d in %.1fs", method, where, last, attempt, self.retries, delay)
                time.sleep(delay)
            body = data() if data else None
            try:
                response = self.session.request(method, url, headers=headers, data=body, auth=self._auth,
                                                timeout=self.timeout_s, stream=consume is not None)
                if response.status_code >= 500:
                    last = f"HTTP {response.status_code} ({_artifactory_message(response)})"
                    response.close()
                    continue
                if not self._accepted(response, method, where, missing_ok):
                    return None
                if consume:
                    with response:
                        consume(response)
                return response
            except _TRANSIENT as exc:
                last = f"{type(exc).__name__}: {exc}"
            finally:
                if body is not None:
                    body.close()
        raise ArtifactError(f"{method} {where} failed after {self.retries + 1} attempts; last: {last}. "
                            "Artifactory is unavailable or overloaded: retry later")

    def _accepted(self, response: requests.Response, method: str, where: str, missing_ok: bool) -> bool:
        """True for a 2xx, False for a tolerated 404; raise the matching error otherwise."""
        status = response.status_code
        if status < 300:
            return True
        message = _artifactory_message(response)
        response.close()
        if status == 401:
            raise ArtifactAuthError(f"{method} {where}: Artifactory answered 401 ({message}); check the "
                                    f"connection's access token (or user and password)")
        if status == 403:
            needs = ("Deploy (and Annotate, for the properties set with it; Delete, to replace other bytes)"
                     if method == "PUT" else "Read")
            raise ArtifactAuthError(f"{method} {where}: Artifactory answered 403 ({message}): the connection's "
                                    f"token lacks a permission on repository {self.repo}; this call needs {needs}")
        if status == 404:
            if missing_ok:
                return False
            raise ArtifactNotFound(f"{method} {where}: not found in Artifactory ({message})")
        if status == 409:
            raise ArtifactError(f"{method} {where}: Artifactory refused it (409 Conflict: {message}); a checksum "
                                "that does not match the bytes sent, or a refused property")
        raise ArtifactError(f"{method} {where}: Artifactory answered {status} ({message})")
