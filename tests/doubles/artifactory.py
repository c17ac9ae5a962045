"""A JFrog Artifactory test double: one generic local repository over HTTP, on 127.0.0.1.

No Artifactory server can run on a test machine, so this double serves the REST calls the
product makes, with the request and response shapes JFrog documents (checked Nov 2026):

- Deploy Artifact, https://jfrog.com/help/r/jfrog-rest-apis/deploy-artifact :
  `PUT /<repo>/<path>`; optional headers X-Checksum-Sha1 / X-Checksum-Sha256, and X-Checksum
  whose algorithm is resolved by its length (32 md5, 40 sha1, 64 sha256; see "Deploy Artifact by
  Checksum", https://jfrog.com/help/r/jfrog-rest-apis/deploy-artifact-by-checksum). "Artifactory
  rejects the deployment if the checksums do not match": 409 Conflict (JFrog knowledge base,
  "What are Client Checksum, Server Checksum, and Checksum Policy"). 201 with an ItemCreated body
  {repo, path, created, createdBy, downloadUri, mimeType, size, checksums, originalChecksums}.
- Properties on deploy, https://jfrog.com/help/r/jfrog-artifactory-documentation/using-properties-in-deployment-and-resolution :
  matrix parameters `;key=value` anywhere in the deploy URI become properties of the deployed
  item; a comma separates several values of one key.
- File List, https://jfrog.com/help/r/jfrog-rest-apis/file-list :
  `GET /api/storage/<repo>/<folder>?list[&deep=0/1][&depth=n][&listFolders=0/1][&mdTimestamps=0/1][&includeRootPath=0/1]`
  -> {uri, created, files: [{uri: "/relative/path", size, lastModified, folder, sha1, sha2}]}.
  The documentation's sample quotes size and folder as strings and shows sha1 only; Artifactory
  5.5+ also lists sha2 (sha256), and current servers send numbers and booleans, as here.
  mdTimestamps and includeRootPath are accepted and change nothing here.
- File Info, https://jfrog.com/help/r/jfrog-rest-apis/get-file-info :
  `GET /api/storage/<repo>/<path>` -> {uri, downloadUri, repo, path, created, createdBy,
  lastModified, modifiedBy, lastUpdated, size, mimeType, checksums{md5,sha1,sha256},
  originalChecksums{...}}; a folder gives Folder Info with `children`.
- Item Properties, https://jfrog.com/help/r/jfrog-rest-apis/get-item-properties :
  `GET /api/storage/<repo>/<path>?properties[=x[,y]]` -> {uri, properties: {key: [values]}};
  404 when the item has none.
- Retrieve Artifact: `GET /<repo>/<path>` with X-Checksum-Sha1, X-Checksum-Sha256 and
  X-Checksum-Md5 headers ("They are included as download header information", SHA-256 support
  page, https://jfrog.com/help/r/9v7KIKaogmdGkAN6IUp6TA/8XnNiQTsK2jPN0Uyj1EaLw).
- Errors, https://jfrog.com/help/r/jfrog-rest-apis/errors : {"errors": [{"status": 409, "message": "..."}]}.

For tests: `fail_next()` makes the next N matching requests answer 5xx, `count()` counts
requests, `corrupt()` damages stored bytes while the recorded checksums stay (bit rot in the
filestore), `seed()` stores a file as another client would have deployed it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from urllib.parse import parse_qs, unquote

from tests.doubles._http import DoubleHandler, ThreadedDouble


def _now() -> str:
    """ISO 8601 with milliseconds, the way Artifactory writes timestamps."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checksums(data: bytes) -> dict[str, str]:
    return {"md5": hashlib.md5(data).hexdigest(), "sha1": hashlib.sha1(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


@dataclass
class StoredFile:
    """One file of the repository. `checksums` are those computed at deploy time (Artifactory
    keeps them in its database), so they survive a corruption of `data`."""

    data: bytes
    checksums: dict[str, str]
    properties: dict[str, list[str]] = field(default_factory=dict)
    created: str = field(default_factory=_now)
    created_by: str = "anonymous"


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern
    remaining: int
    status: int
    message: str


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _split_matrix(raw_path: str) -> tuple[str, dict[str, list[str]]]:
    """`/a;k=v/b;k2=v1,v2` -> ("/a/b", {k: [v], k2: [v1, v2]}); split before decoding so an
    encoded ';', '=' or ',' stays inside its value."""
    segments, properties = [], {}
    for segment in raw_path.split("/"):
        name, *params = segment.split(";")
        segments.append(unquote(name))
        for param in params:
            key, _, value = param.partition("=")
            properties[unquote(key)] = [unquote(v) for v in value.split(",")]
    return "/".join(segments), properties


class ArtifactoryDouble(ThreadedDouble):
    """Serves one generic local repository at `base_url` (`http://127.0.0.1:<port>/artifactory`)."""

    def __init__(self, *, repo: str = "llm-generic-local", token: str = "test-token",
                 users: dict[str, str] | None = None, checksum_policy: str = "client",
                 redirect_downloads: bool = False, permissions: dict[str, set[str]] | None = None,
                 hide_unauthorized: bool = False):
        """`checksum_policy`: the repository's checksum policy as Artifactory names it: "client"
        refuses a deploy whose checksum headers do not match the bytes (409); "server" stores
        the bytes anyway and records their real checksums. `redirect_downloads`: downloads answer
        302 to a storage URL (as with download redirect to cloud storage), which serves the
        bytes without Artifactory's checksum headers. `permissions`: user ("token-user" for the
        access token) -> the subset of {"read", "deploy", "delete", "annotate"} it holds on the
        repository (default: all). Deploying over a file with other bytes needs "delete", deploying
        with properties "annotate"; refusals are 403, or 404 with `hide_unauthorized` (Artifactory's
        "hide existence of unauthorized resources")."""
        self.repo = repo
        self.token = token
        self.users = dict(users or {})
        self.checksum_policy = checksum_policy
        self.redirect_downloads = redirect_downloads
        self._damage: list[re.Pattern] = []
        self.permissions = permissions
        self.hide_unauthorized = hide_unauthorized
        self._landing: list[tuple[re.Pattern, bytes]] = []
        self.requests: list[tuple[str, str]] = []  # (method, path?query), matrix params removed
        self._files: dict[str, StoredFile] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    thread_name = "artifactory-double"

    @property
    def handler(self):
        return _Handler

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/artifactory"

    @property
    def storage_base_url(self) -> str:
        """Where redirected downloads go (another "host" in production: cloud storage)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/_storage"

    # -- test controls --------------------------------------------------------------------------

    def fail_next(self, method: str, pattern: str, times: int = 1, status: int = 503,
                  message: str = "Service Unavailable") -> None:
        """The next `times` requests of `method` whose path?query matches `pattern` (re.search)
        answer `status` with `message` in Artifactory's error body, before anything else happens."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(pattern), times, status, message))

    def count(self, method: str | None = None, pattern: str = "") -> int:
        """Requests received (injected failures included) by method and path?query pattern."""
        with self._lock:
            return sum(1 for m, target in self.requests
                       if (method is None or m == method.upper()) and re.search(pattern, target))

    def file(self, path: str) -> StoredFile | None:
        """The stored file at a repository-relative path, or None."""
        with self._lock:
            return self._files.get(path.strip("/"))

    def seed(self, path: str, data: bytes, properties: dict[str, list[str]] | None = None) -> None:
        """Store a file directly, as another client would have deployed it."""
        with self._lock:
            self._files[path.strip("/")] = StoredFile(data, _checksums(data), dict(properties or {}))

    def damage_next_deploy(self, pattern: str) -> None:
        """The next deploy whose path matches `pattern` arrives with one byte flipped (as bytes
        damaged in transit would), after the client computed its checksum headers."""
        with self._lock:
            self._damage.append(re.compile(pattern))

    def land_first(self, pattern: str, data: bytes) -> None:
        """The next deploy whose path matches `pattern` finds `data` already there, as if another
        publisher's deploy had landed a moment before it."""
        with self._lock:
            self._landing.append((re.compile(pattern), data))

    def _require(self, user: str, permission: str, rest: str, why: str = "") -> None:
        held = {"read", "deploy", "delete", "annotate"} if self.permissions is None else \
            self.permissions.get(user, set())
        if permission not in held:
            if self.hide_unauthorized:
                raise _HttpError(404, "File not found.")
            raise _HttpError(403, f"Not enough permissions to {why or permission} '{self.repo}:{rest}' "
                                  f"(user: '{user}' needs {permission.upper()} permission).")

    def corrupt(self, path: str) -> None:
        """Flip one byte of a stored file; its recorded checksums stay as deployed."""
        with self._lock:
            stored = self._files[path.strip("/")]
            middle = len(stored.data) // 2
            stored.data = stored.data[:middle] + bytes([stored.data[middle] ^ 0xFF]) + stored.data[middle + 1:]

    # -- request handling (called from the handler's threads) ----------------------------------

    def _injected_fault(self, method: str, target: str) -> _Fault | None:
        with self._lock:
            self.requests.append((method, target))
            for fault in self._faults:
                if fault.remaining and fault.method == method and fault.pattern.search(target):
                    fault.remaining -= 1
                    return fault
        return None

    def _authenticated_user(self, authorization: str) -> str | None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.token and credentials == self.token:
            return "token-user"
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if user in self.users and self.users[user] == password:
                return user
        return None

    def _repo_path(self, path: str) -> str:
        """`/<repo>/<rest>` -> `<rest>`; another repository does not exist here."""
        repo, _, rest = path.strip("/").partition("/")
        if repo != self.repo:
            raise _HttpError(404, f"Repository {repo} not found")
        return rest.strip("/")

    def deploy(self, path: str, data: bytes, headers, properties: dict[str, list[str]], user: str) -> dict:
        rest = self._repo_path(path)
        if not rest:
            raise _HttpError(400, "Cannot deploy to the repository root")
        self._require(user, "deploy", rest, "deploy")
        if properties:
            self._require(user, "annotate", rest, "annotate")
        with self._lock:
            damage = next((p for p in self._damage if p.search(rest)), None)
            if damage is not None:
                self._damage.remove(damage)
            landing = next((entry for entry in self._landing if entry[0].search(rest)), None)
            if landing is not None:
                self._landing.remove(landing)
                self._files[rest] = StoredFile(landing[1], _checksums(landing[1]), {}, created_by="another-publisher")
            existing = self._files.get(rest)
        if damage is not None and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        actual = _checksums(data)
        if existing is not None and existing.checksums["sha256"] != actual["sha256"]:
            self._require(user, "delete", rest, "delete/overwrite artifact")
        original = dict(actual)
        if self.checksum_policy == "client":
            for header, algorithm in (("X-Checksum-Sha256", "sha256"), ("X-Checksum-Sha1", "sha1")):
                self._check_sent(headers.get(header), actual[algorithm], algorithm)
        else:  # "server": the bytes as they arrived are stored; what the client sent is recorded
            original.update({a: headers[h].lower() for h, a in (("X-Checksum-Sha256", "sha256"),
                                                               ("X-Checksum-Sha1", "sha1")) if headers.get(h)})
        generic = headers.get("X-Checksum")
        if generic:
            by_length = {32: "md5", 40: "sha1", 64: "sha256"}.get(len(generic))
            if by_length is None:
                raise _HttpError(400, f"Unrecognized checksum length in X-Checksum: {len(generic)}")
            if self.checksum_policy == "client":
                self._check_sent(generic, actual[by_length], by_length)
        with self._lock:
            self._files[rest] = StoredFile(data, actual, properties, created_by=user)
        return {"repo": self.repo, "path": f"/{rest}", "created": _now(), "createdBy": user,
                "downloadUri": f"{self.base_url}/{self.repo}/{rest}", "mimeType": "application/octet-stream",
                "size": str(len(data)), "checksums": actual, "originalChecksums": original,
                "uri": f"{self.base_url}/{self.repo}/{rest}"}

    @staticmethod
    def _check_sent(sent: str | None, actual: str, algorithm: str) -> None:
        if sent and sent.lower() != actual:
            raise _HttpError(409, f"Checksum policy violation: the client sent {algorithm} '{sent}' "
                                  f"but the actual {algorithm} of the uploaded content is '{actual}'")

    def download(self, path: str, user: str | None = None) -> StoredFile:
        rest = self._repo_path(path)
        if user is not None:
            self._require(user, "read", rest, "read")
        stored = self.file(rest)
        if stored is None:
            raise _HttpError(404, "File not found.")
        return stored

    def storage(self, path: str, query: dict[str, list[str]]) -> dict:
        """The /api/storage/<repo>/<path> family: File List, Item Properties, File/Folder Info."""
        rest = self._repo_path(path)
        with self._lock:
            files = dict(self._files)
        is_folder = rest == "" or any(key.startswith(rest + "/") for key in files)
        if rest not in files and not is_folder:
            raise _HttpError(404, "Unable to find item")
        uri = f"{self.base_url}/api/storage/{self.repo}/{rest}".rstrip("/")
        if "list" in query:
            if not is_folder:
                raise _HttpError(400, "Expected folder but found file")
            return {"uri": uri, "created": _now(), "files": _file_list(files, rest, query)}
        if "properties" in query:
            return self._properties(files.get(rest), uri, query["properties"][0])
        if rest in files:
            return self._file_info(files[rest], rest, uri)
        prefix = f"{rest}/" if rest else ""
        children = sorted({key[len(prefix):].split("/")[0] for key in files if key.startswith(prefix)})
        return {"uri": uri, "repo": self.repo, "path": f"/{rest}", "created": _now(), "createdBy": "anonymous",
                "lastModified": _now(), "modifiedBy": "anonymous", "lastUpdated": _now(),
                "children": [{"uri": f"/{c}", "folder": f"{rest}/{c}".strip("/") not in files} for c in children]}

    @staticmethod
    def _properties(stored: StoredFile | None, uri: str, wanted: str) -> dict:
        properties = dict(stored.properties) if stored else {}
        if wanted:
            properties = {k: v for k, v in properties.items() if k in wanted.split(",")}
        if not properties:
            raise _HttpError(404, "No properties could be found.")
        return {"uri": uri, "properties": properties}

    def _file_info(self, stored: StoredFile, rest: str, uri: str) -> dict:
        return {"uri": uri, "downloadUri": f"{self.base_url}/{self.repo}/{rest}", "repo": self.repo,
                "path": f"/{rest}", "created": stored.created, "createdBy": stored.created_by,
                "lastModified": stored.created, "modifiedBy": stored.created_by, "lastUpdated": stored.created,
                "size": str(len(stored.data)), "mimeType": "application/octet-stream",
                "checksums": dict(stored.checksums), "originalChecksums": dict(stored.checksums)}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["0"])[0] == "1"


def _file_list(files: dict[str, StoredFile], folder: str, query: dict[str, list[str]]) -> list[dict]:
    """File List entries under `folder`, relative to it, honouring deep, depth and listFolders."""
    deep = _flag(query, "deep")
    max_depth = (int(query["depth"][0]) if "depth" in query else None) if deep else 1
    prefix = f"{folder}/" if folder else ""
    entries, folders = [], set()
    for key, stored in sorted(files.items()):
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)) if max_depth is None or i <= max_depth)
        if max_depth is None or len(parts) <= max_depth:
            entries.append({"uri": "/" + "/".join(parts), "size": len(stored.data), "lastModified": stored.created,
                            "folder": False, "sha1": stored.checksums["sha1"], "sha2": stored.checksums["sha256"]})
    if _flag(query, "listFolders"):
        entries += [{"uri": f"/{f}", "size": -1, "lastModified": _now(), "folder": True} for f in sorted(folders)]
    return entries


class _Handler(DoubleHandler):
    server_version = "Artifactory/7 (test double)"

    def _handle(self) -> None:
        """Read the whole body first (so an early error never breaks the connection), then
        injected faults, authentication, and the endpoint."""
        body = self._read_body()
        raw_path, _, raw_query = self.path.partition("?")
        if raw_path.startswith("/_storage/") and self.command == "GET":
            # the cloud storage a redirected download lands on: bytes only, no Artifactory headers
            try:
                stored = self.double.download(raw_path[len("/_storage"):])
            except _HttpError as exc:
                return self._error(exc.status, exc.message)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(stored.data)))
            self.end_headers()
            self.wfile.write(stored.data)
            return
        if not raw_path.startswith("/artifactory/"):
            return self._error(404, "Not Found")
        clean_path, properties = _split_matrix(raw_path[len("/artifactory"):])
        fault = self.double._injected_fault(self.command, clean_path + (f"?{raw_query}" if raw_query else ""))
        if fault:
            return self._error(fault.status, fault.message)
        user = self.double._authenticated_user(self.headers.get("Authorization", ""))
        if user is None:
            return self._error(401, "Bad credentials", {"WWW-Authenticate": 'Basic realm="Artifactory Realm"'})
        try:
            self._route(clean_path, raw_query, body, properties, user)
        except _HttpError as exc:
            self._error(exc.status, exc.message)

    def _route(self, clean_path: str, raw_query: str, body: bytes, properties: dict[str, list[str]],
               user: str) -> None:
        if clean_path.startswith("/api/storage/"):
            if self.command != "GET":
                raise _HttpError(405, "Method Not Allowed")
            query = parse_qs(raw_query, keep_blank_values=True)
            return self._json(200, self.double.storage(clean_path[len("/api/storage"):], query))
        if clean_path.startswith("/api/"):
            raise _HttpError(404, "Not Found")
        if self.command == "PUT":
            return self._json(201, self.double.deploy(clean_path, body, self.headers, properties, user))
        stored = self.double.download(clean_path, user)
        if self.double.redirect_downloads:
            self.send_response(302)
            self.send_header("Location", f"{self.double.storage_base_url}{clean_path}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._send_file(stored)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send_file(self, stored: StoredFile) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(stored.data)))
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.send_header("ETag", stored.checksums["sha1"])
        self.send_header("X-Checksum-Sha1", stored.checksums["sha1"])
        self.send_header("X-Checksum-Sha256", stored.checksums["sha256"])
        self.send_header("X-Checksum-Md5", stored.checksums["md5"])
        self.end_headers()
        self.wfile.write(stored.data)

    def _json(self, status: int, doc: dict, headers: dict | None = None) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._json(status, {"errors": [{"status": status, "message": message}]}, headers)
