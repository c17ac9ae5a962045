"""Traffic routing between Triton model versions on an Envoy we run ourselves.

Envoy reads its clusters (CDS) and routes (RDS) from files in a watched directory; writing a
new file and renaming it into place changes routing live, with no restart and no dropped
connection. After each change the router reads Envoy's admin API back and verifies that what
Envoy serves is exactly what was asked.

Per model, in order: pinned routes (`/v2/models/<m>/versions/<n>/...` always reaches n), header
routes (A/B: `x-experiment: B` -> a version), then the weighted split of everything else.
Each version has its own cluster `<model>_v<N>` (even when one Triton serves all versions),
so the gateway counts responses per version: Triton's own failure counter misses errors the
backend returns in a response.

How a split works: Envoy draws one random number per request and evaluates every route's
`runtime_fraction` against that same number, so the routes carry *cumulative* fractions
(70, 90, rest for 70/20/10).

Topologies:
- `versions` (several versions in one Triton): routes rewrite the path to
  `/v2/models/<m>/versions/<n>/...`;
- `model_per_release` (TensorRT-LLM: one engine per model, so a release is a model name such
  as `<m>_r42`): routes rewrite the model name to `<m>_r<n>`;
- `deployment_per_version` (one Triton per version): clusters point at each version's own
  backend and paths are left alone.

Shadow (mirror): Envoy sends the copy with the *primary's* rewritten path, so in the shared
Triton topologies the copy goes to an internal "shadow" listener of the same Envoy, addressed by
host `<model>.v<N>.shadow`, which rewrites it for version N. Copies are counted on their own
clusters (`<model>_v<N>_shadow`); their answers are discarded by Envoy.

Writers: one Envoy may be changed by several processes at once (two Airflow workers, the CLI
beside a DAG). Every change reads routing-state.json, changes one model, rewrites the xDS files
and verifies what Envoy serves, all under an exclusive `flock` on `routing.lock` in the xDS
directory, so no writer loses another's update and none verifies while another rewrites. A
writer waits for the lock at most `lock_timeout_s` (30 s by default), then raises RoutingError
naming the lock file.

Forgetting a version (`forget`): its clusters, pinned route and shadow host are removed (routes
first, then clusters, so no route ever names a missing cluster), and its pinned paths
`/v2/models/<m>/versions/<N>/...` answer 404 at the gateway instead of passing through to
Triton. A version that still receives traffic is refused. Routing it again brings it back.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import requests

from llm_release.errors import RoutingError, SpecError
from llm_release.fsutil import exclusive_lock, write_atomically
from llm_release.routing.base import TrafficRouter
from llm_release.routing.state import RoutingState

ROUTE_CONFIG_NAME = "llm_gateway"
SHADOW_ROUTE_CONFIG_NAME = "llm_shadow"
PASSTHROUGH_CLUSTER = "triton"
SHADOW_CLUSTER = "shadow_listener"
TOPOLOGIES = ("versions", "model_per_release", "deployment_per_version")
_ENDPOINTS = "infer|generate|generate_stream"
LOCK_FILE = "routing.lock"
LOG = logging.getLogger("llm_release.routing.envoy")


def cluster_stem(model: str) -> str:
    """The model's part of its cluster names: dots become `~` (not allowed in a model name).

    Envoy's statistics tag a cluster's series with the name up to the first dot
    (`cluster.<name>.upstream_rq_total`), so a dotted model's clusters (`llama-3.1_v2`) would be
    counted under `llama-3` and the canary judge would never see their traffic."""
    return model.replace(".", "~")


def cluster_name(model: str, version: int, *, shadow: bool = False) -> str:
    return f"{cluster_stem(model)}_v{version}" + ("_shadow" if shadow else "")


def shadow_host(model: str, version: int) -> str:
    return f"{model}.v{version}.shadow"


class EnvoyRouter(TrafficRouter):
    """Routes for models on one Envoy, written as xDS files and verified on the admin API.

    :param upstream: (host, port) of the Triton that serves every version (shared topologies).
    :param backends: version -> (host, port), for `deployment_per_version`.
    :param shadow_listener: (host, port) of this Envoy's internal shadow listener.
    :param lock_timeout_s: how long a change waits for another writer of the same xDS directory.
    """

    kind = "envoy"

    def __init__(self, xds_dir: Path, admin_url: str, upstream: tuple[str, int], *, topology: str = "versions",
                 backends: dict[int, tuple[str, int]] | None = None, shadow_listener: tuple[str, int] | None = None,
                 timeout_s: float = 10.0, lock_timeout_s: float = 30.0):
        if topology not in TOPOLOGIES:
            raise SpecError("topology", f"{topology!r} is not a known topology", f"use one of {', '.join(TOPOLOGIES)}")
        self.xds_dir = Path(xds_dir)
        self.admin_url = admin_url.rstrip("/")
        self.upstream = upstream
        self.topology = topology
        self.backends = backends or {}
        self.shadow_listener = shadow_listener
        self.timeout_s = timeout_s
        self.lock_timeout_s = lock_timeout_s
        self._state_file = self.xds_dir / "routing-state.json"
        self.lock_file = self.xds_dir / LOCK_FILE

    # -- desired state (ours) -------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        if not self._state_file.exists():
            return {}
        return json.loads(self._state_file.read_text())["models"]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of this xDS directory at a time, across processes (see the module docstring)."""
        self.xds_dir.mkdir(parents=True, exist_ok=True)
        try:
            with exclusive_lock(self.lock_file, timeout_s=self.lock_timeout_s):
                yield
        except TimeoutError as exc:
            raise RoutingError(f"another writer has held the Envoy routing lock {self.lock_file} for more than "
                               f"{self.lock_timeout_s:g} s; a change may be stuck: look for a hung llm-release "
                               "process on this host, then retry") from exc

    # -- TrafficRouter --------------------------------------------------------------------
    def get_state(self, model: str) -> RoutingState | None:
        """Parsed from the routes Envoy serves now, not from our files."""
        return parse_model_state(model, self._route_config_dump())

    def apply(self, state: RoutingState) -> RoutingState:
        if state.mirror_percent and self.topology != "deployment_per_version" and not self.shadow_listener:
            raise SpecError("mirror_version", "this gateway has no shadow listener configured",
                            "set shadow_listener (the local stack provides one)")
        missing = [v for v in sorted(_all_versions(state)) if self.topology == "deployment_per_version"
                   and v not in self.backends]
        if missing:
            raise SpecError("backends", f"no backend for versions {missing}", "give host:port for each version")
        # Read, change, write and verify under the lock: a concurrent writer neither loses this
        # change nor sees it verified against files it is rewriting.
        with self._locked():
            models = self._load()
            entry = models.get(state.model, {"versions": []})
            entry["versions"] = sorted(set(entry["versions"]) | _all_versions(state))
            entry["state"] = state.to_dict()
            # Topology and backends belong to the model: routers of different topologies can share
            # one Envoy without re-rendering each other's models their own way.
            entry["topology"] = self.topology
            entry["backends"] = {str(v): list(hp) for v, hp in self.backends.items()}
            entry["upstream"] = list(self.upstream)
            # Routing a forgotten version again brings it back.
            forgotten = [v for v in entry.get("forgotten", []) if v not in _all_versions(state)]
            if forgotten:
                entry["forgotten"] = forgotten
            else:
                entry.pop("forgotten", None)
            models[state.model] = entry
            self._write(models)
            applied = self.get_state(state.model)
            if applied != state:
                raise RoutingError(f"Envoy serves {applied.to_dict() if applied else None} for {state.model}, "
                                   f"expected {state.to_dict()}")
            return applied

    def known_versions(self, model: str) -> set[int]:
        """Versions of `model` that have a cluster in Envoy now (routed once, not forgotten since)."""
        own = re.compile(rf"^{re.escape(cluster_stem(model))}_v([0-9]+)(_shadow)?$")
        return {int(found.group(1)) for name in self._live_clusters() if (found := own.match(name))}

    def forget(self, model: str, version: int) -> RoutingState | None:
        """Remove `version`'s clusters, pinned route and shadow host; its pinned paths answer 404.

        Refused (SpecError on "version") while the version receives traffic. A version Envoy
        does not know is a no-op. Verified on the admin API; returns the model's routing.
        """
        version = _checked_version(version)
        with self._locked():
            models = self._load()
            entry = models.get(model)
            current = self.get_state(model)
            written = RoutingState.from_dict(entry["state"]) if entry and entry.get("state") else None
            for routing, what in ((current, "Envoy serves"), (written, "the routing last written is")):
                if routing is not None and version in routing.versions:
                    raise SpecError("version", f"{model} v{version} still receives traffic ({what} "
                                    f"{routing.describe()})", "move its traffic to other versions first "
                                    "(set_weights, switch, or drop its header route and mirror), then forget it")
            names = {cluster_name(model, version), cluster_name(model, version, shadow=True)}
            in_file = entry is not None and version in entry.get("versions", [])
            if not in_file and not names & self._live_clusters():
                LOG.info("%s: Envoy does not know v%d; nothing to forget", model, version)
                return current
            if entry is not None:
                entry["versions"] = [v for v in entry["versions"] if v != version]
                entry["forgotten"] = sorted(set(entry.get("forgotten", [])) | {version})
            self._write(models, dropping=names)
            self._verify_forgotten(model, version, current)
            LOG.info("%s: Envoy forgot v%d (clusters %s removed); routing: %s", model, version,
                     ", ".join(sorted(names)), current.describe() if current else "none")
            return current

    def _verify_forgotten(self, model: str, version: int, expected: RoutingState | None) -> None:
        names = {cluster_name(model, version), cluster_name(model, version, shadow=True)}
        left = sorted(names & self._live_clusters())
        doc = self._route_config_dump()
        naming = [route.get("name") for route in doc.get("virtual_hosts", [{}])[0].get("routes", [])
                  if route.get("name") == f"{model}-v{version}-pinned" or names & _clusters_named(route)]
        applied = parse_model_state(model, doc)
        if left or naming or applied != expected:
            raise RoutingError(f"Envoy still knows {model} v{version} after forgetting it: clusters {left}, "
                               f"routes {naming}; it serves {applied.to_dict() if applied else None}, expected "
                               f"{expected.to_dict() if expected else None}")

    # -- rendering ------------------------------------------------------------------------
    @staticmethod
    def _backend(entry: dict, version: int) -> tuple[str, int]:
        if entry.get("topology") == "deployment_per_version":
            host, port = entry["backends"][str(version)]
            return host, int(port)
        host, port = entry["upstream"]
        return host, int(port)

    def _clusters(self, models: dict[str, dict]) -> list[dict]:
        clusters = [cluster_resource(PASSTHROUGH_CLUSTER, self.upstream)]
        if self.shadow_listener:
            clusters.append(cluster_resource(SHADOW_CLUSTER, self.shadow_listener))
        for model, entry in sorted(models.items()):
            for version in entry["versions"]:
                backend = self._backend(entry, version)
                clusters.append(cluster_resource(cluster_name(model, version), backend))
                per_version = entry.get("topology") == "deployment_per_version"
                shadow_target = backend if per_version else self.shadow_listener
                if shadow_target:
                    clusters.append(cluster_resource(cluster_name(model, version, shadow=True), shadow_target))
        return clusters

    def _write(self, models: dict[str, dict], *, dropping: set[str] = frozenset()) -> None:
        """Render and write every model; `dropping` names the clusters this write removes."""
        generation = time.time_ns() // 1000
        clusters = self._clusters(models)
        names = {c["name"] for c in clusters}
        # A route that names an unknown cluster answers 503: clusters are added before the routes
        # that use them, and removed after the routes that used them are gone.
        if not dropping:
            write_xds(self.xds_dir / "cds.json", generation, clusters)
            self._wait_for(lambda: names <= self._live_clusters(), "clusters")
        states = {m: RoutingState.from_dict(e["state"]) for m, e in models.items()}
        versions = {m: e["versions"] for m, e in models.items()}
        topologies = {m: e.get("topology", "versions") for m, e in models.items()}
        forgotten = {m: e["forgotten"] for m, e in models.items() if e.get("forgotten")}
        write_xds(self.xds_dir / "rds-shadow.json", generation,
                  [shadow_route_config(versions, topologies, generation)])
        write_xds(self.xds_dir / "rds.json", generation,
                  [route_config(states, versions, topologies, generation, forgotten=forgotten)])
        self._wait_for(lambda: self._route_config_version(ROUTE_CONFIG_NAME) == str(generation), "routes")
        if dropping:
            write_xds(self.xds_dir / "cds.json", generation, clusters)
            self._wait_for(lambda: names <= (live := self._live_clusters()) and not live & dropping, "clusters")
        write_atomically(self._state_file, json.dumps({"generation": generation, "models": models}, indent=2))

    # -- admin API ------------------------------------------------------------------------
    def _get(self, path: str) -> requests.Response:
        try:
            resp = requests.get(f"{self.admin_url}{path}", timeout=5)
        except requests.RequestException as exc:
            raise RoutingError(f"Envoy admin {self.admin_url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise RoutingError(f"Envoy admin {path} answered {resp.status_code}: {resp.text[:200]}")
        return resp

    def _live_clusters(self) -> set[str]:
        return {line.split("::", 1)[0] for line in self._get("/clusters").text.splitlines() if "::" in line}

    def _route_dump_entry(self, name: str) -> dict:
        dump = self._get("/config_dump?resource=dynamic_route_configs").json()
        for entry in dump.get("configs", []):
            if entry.get("route_config", {}).get("name") == name:
                return entry
        return {}

    def _route_config_version(self, name: str) -> str | None:
        return self._route_dump_entry(name).get("version_info")

    def _route_config_dump(self) -> dict:
        return self._route_dump_entry(ROUTE_CONFIG_NAME).get("route_config", {})

    def _wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        raise RoutingError(f"Envoy did not apply the new {what} within {self.timeout_s:.0f} s")


def _checked_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SpecError("version", f"{version!r} is not a positive integer", "use Triton version numbers 1, 2, 3, ...")
    return version


def _clusters_named(route: dict) -> set[str]:
    """The clusters a route sends to, its mirrors' included."""
    action = route.get("route", {})
    return ({action["cluster"]} if "cluster" in action else set()) | {
        m.get("cluster", "") for m in action.get("request_mirror_policies", [])}


def _all_versions(state: RoutingState) -> set[int]:
    return set(state.weights) | set(state.header_routes.values()) | (
        {state.mirror_version} if state.mirror_version else set())


# -- xDS documents ------------------------------------------------------------------------
def cluster_resource(name: str, upstream: tuple[str, int]) -> dict:
    host, port = upstream
    return {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }


def _meta(model: str, kind: str, **extra) -> dict:
    return {"filter_metadata": {"llm_release": {"model": model, "kind": kind, **extra}}}


def _unpinned(model: str) -> str:
    return f"^/v2/models/{re.escape(model)}/({_ENDPOINTS})$"


def _rewrite(model: str, version: int, topology: str) -> dict | None:
    """How a route for `version` rewrites an unversioned path, per topology."""
    if topology == "deployment_per_version":
        return None
    target = f"/v2/models/{model}/versions/{version}/\\1" if topology == "versions" else f"/v2/models/{model}_r{version}/\\1"
    return {"pattern": {"regex": _unpinned(model)}, "substitution": target}


def _action(model: str, version: int, topology: str) -> dict:
    action = {"cluster": cluster_name(model, version), "timeout": "0s"}
    rewrite = _rewrite(model, version, topology)
    if rewrite:
        action["regex_rewrite"] = rewrite
    return action


def model_routes(state: RoutingState, versions, topology: str = "versions") -> list[dict]:
    """Pinned routes for every known version, header routes, then the weighted split."""
    model = state.model
    escaped = re.escape(model)
    routes = []
    for version in sorted(versions):
        pinned = {"cluster": cluster_name(model, version), "timeout": "0s"}
        if topology == "model_per_release":
            pinned["regex_rewrite"] = {"pattern": {"regex": f"^/v2/models/{escaped}/versions/{version}/({_ENDPOINTS})$"},
                                       "substitution": f"/v2/models/{model}_r{version}/\\1"}
        routes.append({"name": f"{model}-v{version}-pinned",
                       "match": {"safe_regex": {"regex": f"^/v2/models/{escaped}/versions/{version}/({_ENDPOINTS})$"}},
                       "route": pinned, "metadata": _meta(model, "pinned", version=version)})
    for value, version in sorted(state.header_routes.items()):
        routes.append({"name": f"{model}-ab-{value}",
                       "match": {"safe_regex": {"regex": _unpinned(model)},
                                 "headers": [{"name": state.header, "string_match": {"exact": value}}]},
                       "route": _action(model, version, topology),
                       "metadata": _meta(model, "header", header=state.header, value=value, version=version)})
    cumulative = 0
    ordered = sorted((v, w) for v, w in state.weights.items() if w > 0)
    for index, (version, weight) in enumerate(ordered):
        cumulative += weight
        match: dict = {"safe_regex": {"regex": _unpinned(model)}}
        if index < len(ordered) - 1:
            match["runtime_fraction"] = {"default_value": {"numerator": cumulative, "denominator": "HUNDRED"},
                                         "runtime_key": f"llm_release.{model}.split{index}"}
        action = _action(model, version, topology)
        if state.mirror_percent and state.mirror_version is not None:
            mirror = {"cluster": cluster_name(model, state.mirror_version, shadow=True),
                      "runtime_fraction": {"default_value": {"numerator": state.mirror_percent, "denominator": "HUNDRED"},
                                           "runtime_key": f"llm_release.{model}.mirror"}}
            if topology != "deployment_per_version":
                mirror["host_rewrite_literal"] = shadow_host(model, state.mirror_version)
                mirror["disable_shadow_host_suffix_append"] = True
            action["request_mirror_policies"] = [mirror]
        routes.append({"name": f"{model}-v{version}-split", "match": match, "route": action,
                       "metadata": _meta(model, "split", version=version)})
    return routes


def forgotten_route(model: str, versions) -> dict:
    """Paths of forgotten versions answer 404 here instead of passing through to Triton."""
    numbers = "|".join(str(v) for v in sorted(versions))
    return {"name": f"{model}-forgotten",
            "match": {"safe_regex": {"regex": f"^/v2/models/{re.escape(model)}/versions/({numbers})(/.*)?$"}},
            "direct_response": {"status": 404, "body": {"inline_string":
                                f"this version of {model} is not routed by the gateway (forgotten)\n"}},
            "metadata": _meta(model, "forgotten", versions=sorted(versions))}


def route_config(states: dict[str, RoutingState], versions: dict[str, list[int]],
                 topologies: dict[str, str] | str = "versions", generation: int = 0,
                 forgotten: dict[str, list[int]] | None = None) -> dict:
    def topology(model: str) -> str:
        return topologies if isinstance(topologies, str) else topologies.get(model, "versions")

    routes = [r for model, state in sorted(states.items()) for r in model_routes(state, versions[model], topology(model))]
    # Forgotten versions' paths answer 404 instead of reaching Triton through the passthrough.
    routes += [forgotten_route(model, gone) for model, gone in sorted((forgotten or {}).items()) if gone]
    # Anything else under /v2 (health, metadata, models without routes) goes straight to Triton.
    # The repository (load/unload) API is not exposed through the gateway.
    routes.append({"name": "deny-repository", "match": {"prefix": "/v2/repository"},
                   "direct_response": {"status": 403, "body": {"inline_string": "repository API is not exposed on the gateway\n"}}})
    routes.append({"name": "passthrough", "match": {"prefix": "/v2"}, "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}})
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG_NAME,
        # Envoy ignores a route update whose content hashes the same as the live one (and then
        # keeps the old version_info); the generation makes every write observable.
        "metadata": {"filter_metadata": {"llm_release": {"generation": generation}}},
        "virtual_hosts": [{"name": "triton", "domains": ["*"], "routes": routes}],
    }


def shadow_route_config(versions: dict[str, list[int]], topologies: dict[str, str] | str = "versions",
                        generation: int = 0) -> dict:
    """The internal shadow listener: one virtual host per model version, rewriting for it."""
    hosts = []
    for model, known in sorted(versions.items()):
        topology = topologies if isinstance(topologies, str) else topologies.get(model, "versions")
        if topology == "deployment_per_version":
            continue  # copies go straight to the version's own backend
        for version in known:
            target = (f"/v2/models/{model}/versions/{version}/\\2" if topology != "model_per_release"
                      else f"/v2/models/{model}_r{version}/\\2")
            hosts.append({"name": f"{model}-v{version}-shadow", "domains": [shadow_host(model, version)], "routes": [{
                "match": {"prefix": "/"},
                "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s", "regex_rewrite": {
                    "pattern": {"regex": f"^/v2/models/{re.escape(model)}(?:_r[0-9]+)?(/versions/[0-9]+)?/(.*)$"},
                    "substitution": target}}}]})
    hosts.append({"name": "unknown", "domains": ["*"], "routes": [{
        "match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "no such shadow target\n"}}}]})
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": SHADOW_ROUTE_CONFIG_NAME,
        "metadata": {"filter_metadata": {"llm_release": {"generation": generation}}},
        "virtual_hosts": hosts,
    }


def parse_model_state(model: str, route_config_doc: dict) -> RoutingState | None:
    """Read a model's RoutingState back from a route configuration as Envoy dumps it."""
    version_of = re.compile(rf"^{re.escape(cluster_stem(model))}_v([0-9]+)(_shadow)?$")
    weights: dict[int, int] = {}
    header, header_routes = None, {}
    mirror_version, mirror_percent = None, 0
    previous = 0
    for route in route_config_doc.get("virtual_hosts", [{}])[0].get("routes", []):
        meta = route.get("metadata", {}).get("filter_metadata", {}).get("llm_release", {})
        if meta.get("model") != model:
            continue
        found = version_of.match(route.get("route", {}).get("cluster", ""))
        if not found:
            continue
        version = int(found.group(1))
        if meta.get("kind") == "header":
            (matcher,) = route["match"]["headers"]
            header = matcher["name"]
            header_routes[matcher["string_match"]["exact"]] = version
        elif meta.get("kind") == "split":
            fraction = route["match"].get("runtime_fraction", {}).get("default_value", {}).get("numerator")
            cumulative = 100 if fraction is None else int(fraction)
            weights[version] = cumulative - previous
            previous = cumulative
            for mirror in route["route"].get("request_mirror_policies", []):
                shadow = version_of.match(mirror.get("cluster", ""))
                if shadow:
                    mirror_version = int(shadow.group(1))
                    mirror_percent = int(mirror.get("runtime_fraction", {}).get("default_value", {}).get("numerator", 100))
    if not weights:
        return None
    return RoutingState(model, weights, header, header_routes, mirror_version, mirror_percent)


def write_xds(path: Path, generation: int, resources: list[dict]) -> None:
    """Envoy's directory watcher sees only complete files: write beside, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"version_info": str(generation), "resources": resources}, indent=1))
