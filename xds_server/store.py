"""The control plane's durable resources: one JSON file per resource, written atomically.

The files are the gateway's routing: a control plane started again (or a new replica) serves
exactly what was last accepted, and an Envoy that reconnects gets it back. A resource is kept as
the JSON document it was given (what `GET /v1/resources` shows) and as the packed protobuf Envoy
receives; its version is a digest of the packed bytes, so an unchanged resource keeps its version
and a reconnecting Envoy that already has it is not sent it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from google.protobuf import any_pb2, json_format, symbol_database

TYPE_PREFIX = "type.googleapis.com/"


class ResourceError(ValueError):
    """A resource the control plane refuses (unknown type, or not a valid message of its type)."""


@dataclass(frozen=True)
class Resource:
    type_url: str
    name: str
    doc: dict
    packed: any_pb2.Any
    version: str


def pack(type_url: str, name: str, doc: dict) -> Resource:
    """Validate `doc` as a message of `type_url` and pack it for Envoy."""
    if not type_url.startswith(TYPE_PREFIX):
        raise ResourceError(f"type {type_url!r}: expected {TYPE_PREFIX}<message name>")
    try:
        cls = symbol_database.Default().GetSymbol(type_url[len(TYPE_PREFIX):])
    except KeyError:
        raise ResourceError(f"type {type_url!r} is not one this control plane serves") from None
    if not isinstance(doc, dict):
        raise ResourceError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("@type", type_url) != type_url:
        raise ResourceError(f"{name}: a {doc['@type']} given as a {type_url}")
    try:
        message = json_format.ParseDict({k: v for k, v in doc.items() if k != "@type"}, cls())
    except json_format.ParseError as exc:
        raise ResourceError(f"{name}: not a valid {cls.DESCRIPTOR.full_name}: {exc}") from None
    if getattr(message, "name", name) != name:
        raise ResourceError(f"{name}: the document names itself {message.name!r}")
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    return Resource(type_url, name, doc, packed, hashlib.sha256(packed.value).hexdigest()[:16])


class ResourceStore:
    """Resources by type URL and name, mirrored to `<root>/<message name>/<quoted name>.json`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._by_type: dict[str, dict[str, Resource]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            type_url = TYPE_PREFIX + folder.name
            for path in sorted(folder.glob("*.json")):
                name = unquote(path.name[:-len(".json")])
                self._by_type.setdefault(type_url, {})[name] = pack(type_url, name, json.loads(path.read_text()))

    def snapshot(self, type_url: str) -> dict[str, Resource]:
        with self._lock:
            return dict(self._by_type.get(type_url, {}))

    def get(self, type_url: str, name: str) -> Resource | None:
        with self._lock:
            return self._by_type.get(type_url, {}).get(name)

    def types(self) -> list[str]:
        with self._lock:
            return sorted(self._by_type)

    def replace(self, upserts: list[Resource], removals: list[tuple[str, str]]) -> dict[tuple[str, str], Resource | None]:
        """Apply a change; returns what each touched (type, name) was before (None: absent),
        which `restore` puts back when Envoy refuses the change."""
        with self._lock:
            before = {}
            for res in upserts:
                before.setdefault((res.type_url, res.name), self._by_type.get(res.type_url, {}).get(res.name))
            for type_url, name in removals:
                before.setdefault((type_url, name), self._by_type.get(type_url, {}).get(name))
            for res in upserts:
                self._write(res)
                self._by_type.setdefault(res.type_url, {})[res.name] = res
            for type_url, name in removals:
                self._unlink(type_url, name)
                self._by_type.get(type_url, {}).pop(name, None)
            return before

    def restore(self, before: dict[tuple[str, str], Resource | None]) -> None:
        with self._lock:
            for (type_url, name), res in before.items():
                if res is None:
                    self._unlink(type_url, name)
                    self._by_type.get(type_url, {}).pop(name, None)
                else:
                    self._write(res)
                    self._by_type.setdefault(type_url, {})[name] = res

    def _path(self, type_url: str, name: str) -> Path:
        return self.root / type_url[len(TYPE_PREFIX):] / (quote(name, safe="") + ".json")

    def _write(self, res: Resource) -> None:
        path = self._path(res.type_url, res.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(res.doc, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _unlink(self, type_url: str, name: str) -> None:
        self._path(type_url, name).unlink(missing_ok=True)
