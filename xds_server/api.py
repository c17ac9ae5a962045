"""The control plane's HTTP API, which the release system's router calls.

`POST /v1/changes` applies one change as ordered steps, each one resource type's upserts and
removals: every step is stored, pushed to every connected Envoy and answered by each (ACK)
before the next starts, so a route never points at a cluster Envoy does not have yet (clusters
first, then the routes using them; routes dropped before their clusters). Answers:

- 200: every Envoy acknowledged every step; the body has each resource's version;
- 400: a resource is not valid for its type (nothing stored, nothing sent);
- 412: a step's `expect` ({name: version, or null for "absent"}) does not hold: another writer
  changed the resource since the caller read it (steps already taken are undone);
- 409: an Envoy refused a step (its reason in the body); the steps already taken are undone,
  in the store and on every Envoy, so the gateway serves what it served before;
- 503: no Envoy is connected for a step's type, 504: an Envoy did not answer in time. The change
  is stored either way (the routing an Envoy gets when it connects), but unconfirmed.

`GET /v1/resources/<message type>[/<name>]` shows what is stored, `GET /v1/status` the Envoys
connected and their answers so far.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from xds_server.ads import DeltaAds
from xds_server.store import TYPE_PREFIX, Resource, ResourceError, ResourceStore, pack

LOG = logging.getLogger("xds_server.api")
MAX_BODY = 64 * 1024 * 1024


class ChangeFailed(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


class ControlPlane:
    """Store + ADS, and the one lock that keeps changes from interleaving."""

    def __init__(self, store: ResourceStore, ads: DeltaAds):
        self.store = store
        self.ads = ads
        self._changes = threading.Lock()

    def apply(self, doc: dict) -> dict:
        steps = self._parse(doc)
        timeout_s = float(doc.get("timeout_s", 10.0))
        started = time.monotonic()
        with self._changes:
            taken: list[tuple[dict, dict]] = []  # (step, what it replaced)
            results = []
            for index, step in enumerate(steps):
                for name, version in step["expect"].items():
                    stored = self.store.get(step["type_url"], name)
                    if (stored.version if stored else None) != version:
                        self._undo(taken)
                        raise ChangeFailed(412, {"error": f"{name} is at version "
                                                          f"{stored.version if stored else None}, not {version}: "
                                                          "another writer changed it; read it again",
                                                 "step": index, "stored": False})
                # What is stored as given changes nothing: Envoy is not sent it again.
                changed = [r for r in step["upserts"]
                           if (old := self.store.get(r.type_url, r.name)) is None or old.version != r.version]
                removed = [n for n in step["removals"] if self.store.get(step["type_url"], n) is not None]
                results.append({"type_url": step["type_url"],
                                "versions": {r.name: r.version for r in step["upserts"]},
                                "changed": [r.name for r in changed], "removed": removed, "envoys": 0})
                if not changed and not removed:
                    continue
                before = self.store.replace(changed, [(step["type_url"], n) for n in removed])
                taken.append((step, before))
                pendings = self.ads.broadcast(step["type_url"], changed, removed)
                results[-1]["envoys"] = len(pendings)
                if not pendings and self._nobody_subscribed(step["type_url"]):
                    raise ChangeFailed(503, {"error": f"no Envoy is connected for {step['type_url']}; the change "
                                                      "is stored and reaches the gateway when it connects",
                                             "step": index, "stored": True})
                deadline = started + timeout_s
                for pending in pendings:
                    if not pending.done.wait(max(0.0, deadline - time.monotonic())):
                        raise ChangeFailed(504, {"error": f"Envoy {pending.node} did not answer {step['type_url']} "
                                                          f"within {timeout_s:g} s; the change is stored",
                                                 "step": index, "stored": True})
                refused = [p for p in pendings if p.error]
                if refused:
                    self._undo(taken)
                    raise ChangeFailed(409, {"error": f"Envoy {refused[0].node} refused {step['type_url']}: "
                                                      f"{refused[0].error}", "step": index, "stored": False})
            return {"steps": results, "seconds": round(time.monotonic() - started, 4)}

    def _nobody_subscribed(self, type_url: str) -> bool:
        return not any(type_url in s["types"] for s in self.ads.streams())

    def _undo(self, taken: list[tuple[dict, dict]]) -> None:
        """Put back what the taken steps replaced, newest first, in the store and on every Envoy."""
        for step, before in reversed(taken):
            self.store.restore(before)
            back = [r for r in before.values() if r is not None]
            gone = [name for (_, name), r in before.items() if r is None]
            for pending in self.ads.broadcast(step["type_url"], back, gone):
                pending.done.wait(5.0)

    @staticmethod
    def _parse(doc: dict) -> list[dict]:
        if not isinstance(doc, dict) or not isinstance(doc.get("steps"), list) or not doc["steps"]:
            raise ResourceError('expected {"steps": [{"type_url": ..., "upserts": {name: resource}, '
                                '"removals": [name, ...]}, ...]}')
        steps = []
        for i, step in enumerate(doc["steps"]):
            type_url = step.get("type_url", "")
            upserts = step.get("upserts") or {}
            removals = step.get("removals") or []
            if not isinstance(upserts, dict) or not isinstance(removals, list):
                raise ResourceError(f"steps[{i}]: upserts is an object of name -> resource, removals a list of names")
            if not type_url.startswith(TYPE_PREFIX):
                raise ResourceError(f"steps[{i}].type_url {type_url!r}: expected {TYPE_PREFIX}<message name>")
            expect = step.get("expect") or {}
            if not isinstance(expect, dict):
                raise ResourceError(f"steps[{i}].expect is an object of name -> stored version (null: absent)")
            packed: list[Resource] = [pack(type_url, name, body) for name, body in upserts.items()]
            steps.append({"type_url": type_url, "upserts": packed, "removals": [str(n) for n in removals],
                          "expect": expect})
        return steps


def make_http_server(plane: ControlPlane, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "llm-release-xds"

        def log_message(self, fmt, *args):  # requests are logged by outcome below
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 - http.server's name
            if urlparse(self.path).path != "/v1/changes":
                return self._answer(404, {"error": f"no such endpoint {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                return self._answer(400, {"error": f"a change is a JSON body of 1 to {MAX_BODY} bytes"})
            try:
                result = plane.apply(json.loads(self.rfile.read(length)))
            except json.JSONDecodeError as exc:
                return self._answer(400, {"error": f"not JSON: {exc}"})
            except ResourceError as exc:
                return self._answer(400, {"error": str(exc)})
            except ChangeFailed as exc:
                LOG.warning("change not confirmed (%d): %s", exc.status, exc)
                return self._answer(exc.status, exc.body)
            return self._answer(200, result)

        def do_GET(self):  # noqa: N802
            parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
            if parts == ["healthz"]:
                return self._answer(200, {"ok": True})
            if parts == ["v1", "status"]:
                return self._answer(200, {"envoys": plane.ads.streams(), "types": {
                    t: len(plane.store.snapshot(t)) for t in plane.store.types()}})
            if len(parts) in (3, 4) and parts[:2] == ["v1", "resources"]:
                type_url = TYPE_PREFIX + parts[2]
                if len(parts) == 3:
                    return self._answer(200, {n: r.version for n, r in sorted(plane.store.snapshot(type_url).items())})
                res = plane.store.get(type_url, parts[3])
                if res is None:
                    return self._answer(404, {"error": f"no {parts[2]} named {parts[3]!r}"})
                return self._answer(200, {"name": res.name, "version": res.version, "resource": res.doc})
            return self._answer(404, {"error": f"no such endpoint {self.path}"})

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
