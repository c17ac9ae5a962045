"""An OCI registry (Harbor, GHCR, ECR, CNCF distribution, ...) as an artifact store.

A published version is one OCI artifact: repository `<namespace>/<model>`, tag `<version>`,
artifact type `application/vnd.llm-release.engine.v1`, an empty config and two layers, the
engine archive and manifest.json. Blobs are invisible until a manifest references them, so
pushing the blobs first and the tagged manifest last gives the same "complete or absent"
guarantee as uploading manifest.json last to a bucket. Deployments pin the manifest digest
(`pinned_reference`), which no later push can change.

Registries let anyone move a tag; this store does not: before tagging it reads the tag, and a
tag that already names other manifest.json bytes raises ArtifactImmutable. Registries offer no
conditional tag write, so two publishers racing on one new version are not excluded here.

The store speaks the OCI distribution API with requests and takes the token-auth handshake
(WWW-Authenticate: Bearer, realm/service/scope) from the ORAS SDK. ORAS's own push and pull
are not used: its monolithic upload reads a whole blob into memory, it has no progress hook,
and it retries every failure (a refused login included) with sleeps that grow to minutes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, TypeVar
from urllib.parse import urljoin

import requests

from llm_release.artifacts.manifest import ARCHIVE_FILE, MANIFEST_FILE
from llm_release.artifacts.stores.base import ArtifactStore, Listing, ProgressFn, RemoteVersion, parse_manifest_key
from llm_release.errors import (
    ArtifactAuthError,
    ArtifactError,
    ArtifactImmutable,
    ArtifactNotFound,
    ChecksumMismatch,
    SpecError,
)

LOG = logging.getLogger("llm_release.artifacts.oci")

ARTIFACT_TYPE = "application/vnd.llm-release.engine.v1"
ENGINE_LAYER_TYPE = "application/vnd.llm-release.engine.layer.v1.tar"
MANIFEST_LAYER_TYPE = "application/vnd.llm-release.manifest.v1+json"
OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ANNOTATION_PREFIX = "io.llm-release."
TITLE_ANNOTATION = "org.opencontainers.image.title"
# The OCI 1.1 empty descriptor: artifacts carry no config, but the manifest must name one.
EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
# Asked for when reading a tag, so that a foreign image under our namespace comes back (and is
# refused with a reason) instead of answering 404 for a media type we did not accept.
MANIFEST_ACCEPT = ", ".join([
    OCI_MANIFEST_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
# Repository path components as the distribution spec allows them (lower case only).
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_CHUNK = 1 << 20

T = TypeVar("T")


class _Transient(Exception):
    """A 5xx answer or a broken connection: worth another attempt when the request is safe."""


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    title: str | None = None

    def to_dict(self) -> dict:
        doc = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.title:
            doc["annotations"] = {TITLE_ANNOTATION: self.title}
        return doc

    @classmethod
    def of_bytes(cls, media_type: str, data: bytes, title: str | None = None) -> "Descriptor":
        return cls(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data), title)


EMPTY_DESCRIPTOR = Descriptor.of_bytes(EMPTY_CONFIG_TYPE, EMPTY_CONFIG)


def oci_manifest_bytes(engine: Descriptor, manifest: Descriptor, properties: dict[str, str]) -> bytes:
    """The artifact's OCI manifest, encoded canonically so that the same inputs give the same
    digest (no timestamps): an identical re-publish then yields an identical pinned reference."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": EMPTY_DESCRIPTOR.to_dict(),
        "layers": [engine.to_dict(), manifest.to_dict()],
        "annotations": {ANNOTATION_PREFIX + key: str(value) for key, value in sorted(properties.items())},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def layers_by_type(doc: dict) -> dict[str, Descriptor]:
    """The layers of a fetched OCI manifest, keyed by media type; {} for anything else."""
    found = {}
    layers = doc.get("layers") if isinstance(doc, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        try:
            found[layer["mediaType"]] = Descriptor(layer["mediaType"], layer["digest"], int(layer["size"]))
        except (KeyError, TypeError, ValueError):
            continue
    return found


class _ProgressReader:
    """A file, rewound, read by requests in blocks: reports progress and gives the length, so
    the body streams with a Content-Length instead of being read into memory."""

    def __init__(self, fh: IO[bytes], total: int, progress: ProgressFn | None):
        fh.seek(0)
        self.fh, self.total, self.progress, self.done = fh, total, progress, 0

    def __len__(self) -> int:
        return self.total

    def read(self, size: int = -1) -> bytes:
        chunk = self.fh.read(size)
        self.done += len(chunk)
        if self.progress and chunk:
            self.progress(self.done, self.total)
        return chunk


class RegistryHttp:
    """HTTP to one registry: authentication, retries with backoff, error mapping, a request count.

    Answers with 401/403 become ArtifactAuthError after one authenticated retry; 5xx answers and
    connection errors become _Transient, which `call` retries for operations that are safe to
    repeat. Messages name the repository, never credentials.
    """

    def __init__(self, registry: str, *, insecure: bool, username: str | None, password: str | None,
                 attempts: int = 4, backoff_s: float = 0.5, timeout_s: tuple[float, float] = (10.0, 300.0),
                 page_size: int = 1000):
        from oras.auth import get_auth_backend
        from oras.auth.utils import get_basic_auth

        self.registry = registry
        self.scheme = "http" if insecure else "https"
        self.session = requests.Session()
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.page_size = page_size
        self.requests = 0
        self._token_auth = get_auth_backend("token", self.session, insecure)
        self._basic = None
        if username and password:
            self._token_auth.set_basic_auth(username, password)
            self._basic = "Basic " + get_basic_auth(username, password)
        self._authorization: str | None = None

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.registry}/v2/{path}"

    def where(self, repo: str | None = None) -> str:
        return f"oci://{self.registry}/{repo}" if repo else f"oci://{self.registry}"

    def send(self, method: str, url: str, *, repo: str | None, data: Callable[[], object] | None = None,
             **kwargs) -> requests.Response:
        """One request (and one more after an authentication challenge); `data` makes the body
        anew for each, since a streamed body is spent once sent."""
        response = self._send_once(method, url, data, **kwargs)
        if response.status_code == 401 and self._authorize(response):
            response.close()
            response = self._send_once(method, url, data, **kwargs)
        if response.status_code in (401, 403):
            raise ArtifactAuthError(f"{self.where(repo)}: {method} refused with HTTP {response.status_code} "
                                    f"({registry_error(response)}); check the registry credentials and their rights")
        if response.status_code >= 500:
            response.close()
            raise _Transient(f"HTTP {response.status_code} ({registry_error(response)})")
        return response

    def _send_once(self, method: str, url: str, data: Callable[[], object] | None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        self.requests += 1
        try:
            return self.session.request(method, url, headers=headers, data=data() if data else None,
                                        timeout=self.timeout_s, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    def _authorize(self, challenge: requests.Response) -> bool:
        """Answer a 401's WWW-Authenticate: Basic with our credentials, Bearer with a token for
        the scope it names (ORAS's handshake; anonymous when we have no credentials)."""
        scheme = challenge.headers.get("WWW-Authenticate", "").split(" ", 1)[0].lower()
        if scheme == "basic" and self._basic and self._authorization != self._basic:
            self._authorization = self._basic
            return True
        if scheme != "bearer":
            return False
        try:
            headers, changed = self._token_auth.authenticate_request(challenge, {}, refresh=True)
        except requests.RequestException as exc:
            LOG.warning("%s: no token from the registry's auth realm: %s", self.where(), type(exc).__name__)
            return False
        if changed:
            self._authorization = headers["Authorization"]
        return bool(changed)

    def call(self, what: str, repo: str | None, operation: Callable[[], T], *, retry: bool = True) -> T:
        """Run `operation`, again with exponential backoff on a transient failure when `retry`."""
        attempts = self.attempts if retry else 1
        attempt = 1
        while True:
            try:
                return operation()
            except _Transient as exc:
                if attempt >= attempts:
                    raise ArtifactError(f"{self.where(repo)}: {what} failed after {attempts} attempt(s): "
                                        f"{exc}") from exc
                delay = self.backoff_s * 2 ** (attempt - 1)
                LOG.warning("%s: %s failed (%s); retrying in %.1f s", self.where(repo), what, exc, delay)
                time.sleep(delay)
                attempt += 1

    def unexpected(self, response: requests.Response, repo: str | None, what: str) -> ArtifactError:
        return ArtifactError(f"{self.where(repo)}: {what}: unexpected HTTP {response.status_code} "
                             f"({registry_error(response)})")

    def paged(self, path: str, key: str, repo: str | None) -> list[str]:
        """Every entry of a paginated list (`_catalog`, `tags/list`), following Link headers.

        A repository that is gone has no tags; a registry without the catalog API is an error,
        never an empty listing, or a sync would take it for "nothing published".
        """
        entries: list[str] = []
        url: str | None = self.url(path)
        params: dict | None = {"n": self.page_size}
        while url:
            response = self.call(f"listing {path}", repo,
                                 lambda u=url, p=params: self.send("GET", u, repo=repo, params=p))
            if response.status_code == 404 and repo is not None:
                return entries
            if response.status_code == 404:
                raise ArtifactError(f"{self.where()}: the registry does not offer the catalog API (GET /v2/_catalog "
                                    "answered 404), so published versions cannot be listed")
            if response.status_code != 200:
                raise self.unexpected(response, repo, f"listing {path}")
            entries += response.json().get(key) or []
            following = response.links.get("next", {}).get("url")
            url, params = (urljoin(url, following), None) if following else (None, None)
        return entries


def registry_error(response: requests.Response) -> str:
    """The OCI error codes of an answer ("MANIFEST_UNKNOWN: manifest unknown"), else its reason."""
    try:
        errors = response.json().get("errors") or []
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        text = ""
    return text or response.reason or "no detail"


class OciStore(ArtifactStore):
    kind = "oci"

    def __init__(self, registry: str, *, namespace: str = "llm-release", insecure: bool = False,
                 username: str | None = None, password: str | None = None):
        for part in namespace.split("/"):
            if not _REPO_COMPONENT.match(part):
                raise SpecError("namespace", f"{namespace!r} is not a valid OCI repository path",
                                "use lower-case letters, digits and . _ - separated by /")
        self.registry = registry
        self.namespace = namespace
        self.http = RegistryHttp(registry, insecure=insecure, username=username, password=password)
        self._archives: dict[tuple[str, int], Descriptor] = {}
        self._pinned: dict[tuple[str, int], str] = {}

    def describe(self) -> str:
        return f"oci://{self.registry}/{self.namespace}"

    def repository(self, model: str) -> str:
        """`<namespace>/<model>`; Triton allows names (upper case) that OCI repositories do not."""
        if not _REPO_COMPONENT.match(model):
            raise SpecError("model", f"{model!r} cannot name an OCI repository",
                            "OCI repositories take lower-case letters, digits and . _ - only")
        return f"{self.namespace}/{model}"

    def pinned_reference(self, model: str, version: int) -> str:
        """`registry/namespace/model@sha256:...`: what a deployment should pull, immune to re-tags."""
        digest = self._pinned.get((model, version))
        if digest is None:
            found = self._manifest(self.repository(model), str(version))
            if found is None:
                raise ArtifactNotFound(f"{self.describe()}/{model}: version {version} is not published")
            digest = found[0]
        return f"{self.registry}/{self.repository(model)}@{digest}"

    # -- listing --------------------------------------------------------------------------
    def list_published(self) -> Listing:
        """Catalog pages, one tags list per repository of the namespace, one manifest GET per tag."""
        listing = Listing()
        started = self.http.requests
        prefix = self.namespace + "/"
        for repo in self.http.paged("_catalog", "repositories", None):
            if not repo.startswith(prefix):
                continue
            model = repo[len(prefix):]
            if "/" in model:
                listing.rejected.append(f"{repo}: not a model repository (nested below {prefix})")
                continue
            for tag in self.http.paged(f"{repo}/tags/list", "tags", repo):
                self._list_tag(listing, repo, model, tag)
        listing.requests = self.http.requests - started
        return listing

    def _list_tag(self, listing: Listing, repo: str, model: str, tag: str) -> None:
        parsed = parse_manifest_key(f"{model}/{tag}/{MANIFEST_FILE}")
        if isinstance(parsed, str):
            listing.rejected.append(f"{repo}:{tag}: {parsed}")
            return
        found = self._manifest(repo, tag)
        if found is None:  # deleted since the tags list
            return
        layers = layers_by_type(found[1])
        manifest_blob = layers.get(MANIFEST_LAYER_TYPE)
        if manifest_blob is None or not manifest_blob.digest.startswith("sha256:"):
            listing.rejected.append(f"{repo}:{tag}: not an engine artifact (no sha256 {MANIFEST_LAYER_TYPE} layer)")
            return
        engine = layers.get(ENGINE_LAYER_TYPE)
        listing.versions[parsed] = RemoteVersion(
            model=parsed[0], version=parsed[1], manifest_checksum=manifest_blob.digest.removeprefix("sha256:"),
            checksum_algorithm="sha256", archive_size=engine.size if engine else None)

    # -- reads ----------------------------------------------------------------------------
    def _manifest(self, repo: str, reference: str) -> tuple[str, dict] | None:
        """(digest, document) of the manifest a tag or digest names, or None; the bytes are
        checked against the digest the registry states, so the document can be trusted."""
        def get() -> requests.Response:
            return self.http.send("GET", self.http.url(f"{repo}/manifests/{reference}"), repo=repo,
                                  headers={"Accept": MANIFEST_ACCEPT})

        response = self.http.call(f"reading manifest {reference}", repo, get)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self.http.unexpected(response, repo, f"reading manifest {reference}")
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        by_digest = reference.startswith("sha256:")
        stated = response.headers.get("Docker-Content-Digest") or (reference if by_digest else digest)
        if stated != digest:
            raise ChecksumMismatch(f"{self.http.where(repo)}: manifest {reference} has digest {digest}, "
                                   f"the registry says {stated}")
        try:
            return digest, response.json()
        except ValueError as exc:
            raise ArtifactError(f"{self.http.where(repo)}: manifest {reference} is not JSON") from exc

    def _layer(self, model: str, version: int, media_type: str) -> tuple[str, Descriptor] | None:
        repo = self.repository(model)
        found = self._manifest(repo, str(version))
        if found is None:
            return None
        layer = layers_by_type(found[1]).get(media_type)
        if layer is None:
            raise ArtifactError(f"{self.http.where(repo)}:{version} is not an engine artifact (no {media_type} layer)")
        return repo, layer

    def _get_blob(self, repo: str, blob: Descriptor, out: IO[bytes], progress: ProgressFn | None) -> int:
        """Stream a blob into `out` (rewritten on each attempt), verifying size and sha256."""
        def attempt() -> int:
            out.seek(0)
            out.truncate()
            digest, done = hashlib.sha256(), 0
            url = self.http.url(f"{repo}/blobs/{blob.digest}")
            with self.http.send("GET", url, repo=repo, stream=True) as response:
                if response.status_code != 200:
                    raise self.http.unexpected(response, repo, f"reading blob {blob.digest}")
                try:
                    for chunk in response.iter_content(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, blob.size)
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                    raise _Transient(f"download interrupted after {done} bytes: {type(exc).__name__}") from exc
            actual = "sha256:" + digest.hexdigest()
            if actual != blob.digest or done != blob.size:
                raise ChecksumMismatch(f"{self.http.where(repo)}: blob {blob.digest} arrived as {done} bytes "
                                       f"with sha256 {actual} (expected {blob.size} bytes)")
            return done

        return self.http.call(f"downloading blob {blob.digest}", repo, attempt)

    def fetch_manifest(self, model: str, version: int) -> bytes | None:
        found = self._layer(model, version, MANIFEST_LAYER_TYPE)
        if found is None:
            return None
        buffer = io.BytesIO()
        self._get_blob(*found, buffer, None)
        return buffer.getvalue()

    def download_archive(self, model: str, version: int, dest: Path, progress: ProgressFn | None = None, *,
                         name: str = ARCHIVE_FILE) -> int:
        # The engine layer is found through the version's tag; blobs are content-addressed, so the
        # archive's name is only its title.
        found = self._layer(model, version, ENGINE_LAYER_TYPE)
        if found is None:
            raise ArtifactNotFound(f"{self.describe()}/{model}: version {version} is not published")
        try:
            with open(dest, "wb") as out:
                return self._get_blob(*found, out, progress)
        except Exception:
            Path(dest).unlink(missing_ok=True)  # never leave partial or bad bytes for an install to find
            raise

    # -- writes ---------------------------------------------------------------------------
    def _push_blob(self, repo: str, blob: Descriptor, open_body: Callable[[], IO[bytes]],
                   progress: ProgressFn | None = None) -> None:
        """Upload a blob unless the repository has it: POST opens a session, one streamed PUT
        with the digest closes it (the registry checks the digest). Safe to retry as a whole."""
        def exists() -> bool:
            response = self.http.send("HEAD", self.http.url(f"{repo}/blobs/{blob.digest}"), repo=repo,
                                      allow_redirects=True)
            return response.status_code == 200

        def upload() -> None:
            start = self.http.send("POST", self.http.url(f"{repo}/blobs/uploads/"), repo=repo)
            if start.status_code != 202 or "Location" not in start.headers:
                raise self.http.unexpected(start, repo, "starting a blob upload")
            location = urljoin(self.http.url(""), start.headers["Location"])
            with open_body() as fh:
                done = self.http.send("PUT", location, repo=repo, params={"digest": blob.digest},
                                      headers={"Content-Type": "application/octet-stream"},
                                      data=lambda: _ProgressReader(fh, blob.size, progress))
            if done.status_code == 400 and "DIGEST_INVALID" in registry_error(done):
                raise ChecksumMismatch(f"{self.http.where(repo)}: the registry computed another digest than "
                                       f"{blob.digest} for {blob.title or 'a blob'}: the file changed or its "
                                       "sha256 is wrong")
            if done.status_code != 201:
                raise self.http.unexpected(done, repo, f"uploading blob {blob.digest}")

        if self.http.call(f"checking blob {blob.digest}", repo, exists):
            LOG.info("%s: blob %s already present", self.http.where(repo), blob.digest)
            if progress:
                progress(blob.size, blob.size)
            return
        self.http.call(f"uploading blob {blob.digest}", repo, upload)

    def upload_archive(self, model: str, version: int, source: Path, *, sha256: str,
                       properties: dict[str, str], progress: ProgressFn | None = None,
                       name: str = ARCHIVE_FILE) -> None:
        """Push engine.tar as a blob; it stays unreferenced (invisible) until upload_manifest,
        whose OCI manifest carries the properties as annotations."""
        repo = self.repository(model)
        blob = Descriptor(ENGINE_LAYER_TYPE, "sha256:" + sha256.removeprefix("sha256:"),
                          Path(source).stat().st_size, ARCHIVE_FILE)
        self._push_blob(repo, blob, lambda: open(source, "rb"), progress)
        self._archives[(model, version)] = blob

    def upload_manifest(self, model: str, version: int, data: bytes, *, properties: dict[str, str]) -> None:
        """Push manifest.json and the OCI manifest, tagged `<version>` in that one last PUT.

        An existing tag is never moved: same manifest.json -> nothing to do; other -> ArtifactImmutable.
        """
        repo = self.repository(model)
        manifest_blob = Descriptor.of_bytes(MANIFEST_LAYER_TYPE, data, MANIFEST_FILE)
        existing = self._manifest(repo, str(version))
        if existing is not None:
            self._require_same(existing[1], manifest_blob, model, version)
            self._pinned[(model, version)] = existing[0]
            LOG.info("%s:%d is already published with these bytes", self.http.where(repo), version)
            return
        engine = self._archives.get((model, version))
        if engine is None:
            raise ArtifactError(f"{self.http.where(repo)}:{version}: no archive uploaded by this store; "
                                "call upload_archive before upload_manifest")
        self._push_blob(repo, EMPTY_DESCRIPTOR, lambda: io.BytesIO(EMPTY_CONFIG))
        self._push_blob(repo, manifest_blob, lambda: io.BytesIO(data))
        self._pinned[(model, version)] = self._put_manifest(repo, str(version),
                                                            oci_manifest_bytes(engine, manifest_blob, properties))

    def _put_manifest(self, repo: str, tag: str, body: bytes) -> str:
        """PUT the OCI manifest under its tag; return its digest. Not retried: a second PUT could
        move a tag that another publisher set in between; the caller's retry re-checks first."""
        response = self.http.call(
            f"tagging {tag}", repo, retry=False,
            operation=lambda: self.http.send("PUT", self.http.url(f"{repo}/manifests/{tag}"), repo=repo,
                                             headers={"Content-Type": OCI_MANIFEST_TYPE}, data=lambda: body))
        if response.status_code != 201:
            raise self.http.unexpected(response, repo, f"pushing the manifest for tag {tag}")
        return response.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def _require_same(self, existing: dict, manifest_blob: Descriptor, model: str, version: int) -> None:
        published = layers_by_type(existing).get(MANIFEST_LAYER_TYPE)
        if published is None or published.digest != manifest_blob.digest:
            raise ArtifactImmutable(
                f"{model} version {version} is already published in {self.http.where(self.repository(model))} "
                f"with other content (manifest.json {published.digest if published else 'absent'}, "
                f"not {manifest_blob.digest}); published versions are immutable: publish a new version number")
