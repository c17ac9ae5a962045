"""Traffic routing between Triton model versions on an Envoy we run ourselves.

Envoy gets its routing from our control plane (the `xds_server` package) over incremental
(delta) xDS: each model is one routing scope (`ScopedRouteConfiguration`) holding its route
table, plus one cluster per version, and a change to one model sends Envoy that model's
resources only, whatever the number of models on the gateway. Envoy picks the scope of a
request by a hash lookup on its path (`/v2/models/<m>/...`: the 3rd and 4th path segments), so
per request it walks one model's few routes, not every model's. The control plane answers a
change once every connected Envoy has acknowledged it (or refused it, with Envoy's reason);
the router then reads the model's scope back from Envoy's admin API and verifies that what Envoy
serves is exactly what was asked. Why this mechanism and not files or runtime keys:
docs/traffic.md.

Per model, in order: pinned routes (`/v2/models/<m>/versions/<n>/...` always reaches n), header
routes (A/B: `x-experiment: B` -> a version), the weighted split of everything else, and the
model's other paths (metadata, readiness) straight to Triton. Each version has its own cluster
`<model>_v<N>` (even when one Triton serves all versions), so the gateway counts responses per
version: Triton's own failure counter misses errors the backend returns in a response. A model
the gateway does not route answers 404; so does the repository (load/unload) API (403).

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
host `<model>.v<N>.shadow`, which the model's scope rewrites for version N (the shadow listener
shares the gateway's scopes; in `model_per_release` each release name has a small scope of its
own for the copies that carry it). Copies are counted on their own clusters
(`<model>_v<N>_shadow`); their answers are discarded by Envoy.

Where the routing lives: in the control plane's store, nowhere else. A model's scope carries
the router's record of it (known versions, topology, backends, forgotten versions) as metadata,
so any host that reaches the control plane can change any model. Writers are serialised per
model by the control plane: a change names the scope version it was computed from and is refused
(412) if another writer changed the model in between, and the router then reads again and
retries. Writers of different models never wait for each other.

Forgetting a version (`forget`): its clusters, pinned route and shadow host are removed (routes
first, then clusters, so no route ever names a missing cluster), and its pinned paths
`/v2/models/<m>/versions/<N>/...` answer 404 at the gateway instead of passing through to
Triton. A version that still receives traffic is refused. Routing it again brings it back.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote

import requests

from llm_release.errors import RoutingError, SpecError
from llm_release.routing.base import TrafficRouter
from llm_release.routing.state import RoutingState

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SCOPE_TYPE = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
SCOPED_ROUTES_NAME = "llm_models"
PASSTHROUGH_CLUSTER = "triton"
SHADOW_CLUSTER = "shadow_listener"
TOPOLOGIES = ("versions", "model_per_release", "deployment_per_version")
_ENDPOINTS = "infer|generate|generate_stream"
#: Scopes every gateway has: Triton's health endpoints pass through, its repository API is refused.
BASE_SCOPES = {("health", "ready"): "pass", ("health", "live"): "pass",
               ("repository", "index"): "deny", ("repository", "models"): "deny"}
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


def scope_name(model: str) -> str:
    return f"models/{model}"


class EnvoyRouter(TrafficRouter):
    """Routing on an Envoy fed by our control plane.

    :param control_plane_url: the control plane's change API (`xds_server`, e.g. http://host:18090).
    :param admin_url: Envoy's admin API, where every change is read back.
    :param upstream: Triton's HTTP endpoint (shared topologies, and paths passed through).
    :param shadow_listener: this Envoy's internal shadow listener (host, port), for mirrors.
    :param timeout_s: how long a change may take to be acknowledged and seen in Envoy.
    :param attempts: how often a change computed from a model's routing is retried when another
        writer changed the model in between.
    """

    kind = "envoy"

    def __init__(self, control_plane_url: str, admin_url: str, upstream: tuple[str, int], *,
                 topology: str = "versions", backends: dict[int, tuple[str, int]] | None = None,
                 shadow_listener: tuple[str, int] | None = None, timeout_s: float = 10.0, attempts: int = 20):
        if topology not in TOPOLOGIES:
            raise SpecError("topology", f"{topology!r} is not a known topology", f"use one of {', '.join(TOPOLOGIES)}")
        self.control_plane_url = control_plane_url.rstrip("/")
        self.admin_url = admin_url.rstrip("/")
        self.upstream = (str(upstream[0]), int(upstream[1]))
        self.topology = topology
        self.backends = backends or {}
        self.shadow_listener = shadow_listener
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._base_ready = False

    # -- TrafficRouter --------------------------------------------------------------------
    def get_state(self, model: str) -> RoutingState | None:
        """Parsed from the scope Envoy serves now, not from the control plane's store."""
        return parse_model_state(model, self._served_routes(model))

    def apply(self, state: RoutingState) -> RoutingState:
        if state.mirror_percent and self.topology != "deployment_per_version" and not self.shadow_listener:
            raise SpecError("mirror_version", "this gateway has no shadow listener configured",
                            "set shadow_listener (the local stack provides one)")
        missing = [v for v in sorted(_all_versions(state)) if self.topology == "deployment_per_version"
                   and v not in self.backends]
        if missing:
            raise SpecError("backends", f"no backend for versions {missing}", "give host:port for each version")
        self._ensure_base()

        def change(entry: dict | None) -> dict:
            entry = dict(entry or {"versions": []})
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
            return entry

        written = self._change_model(state.model, change)
        applied = self._wait_served(state.model, lambda served: served == state, written)
        if applied != state and self._record(state.model)[1] != written:
            # Acknowledged by Envoy, then replaced by another writer's later change of the model
            # before this read-back: this change took effect; the model is the later writer's now.
            LOG.info("%s: %s was applied, then replaced by another writer's change (%s)", state.model,
                     state.describe(), applied.describe() if applied else "no routing")
            return state
        if applied != state:
            raise RoutingError(f"Envoy serves {applied.to_dict() if applied else None} for {state.model}, "
                               f"expected {state.to_dict()}")
        return applied

    def known_versions(self, model: str) -> set[int]:
        """Versions of `model` that have a cluster in Envoy now (routed once, not forgotten since)."""
        own = re.compile(rf"^{re.escape(cluster_stem(model))}_v([0-9]+)(_shadow)?$")
        return {int(found.group(1)) for name in self._live_clusters(model) if (found := own.match(name))}

    def forget(self, model: str, version: int) -> RoutingState | None:
        """Remove `version`'s clusters, pinned route and shadow host; its pinned paths answer 404.

        Refused (SpecError on "version") while the version receives traffic. A version Envoy
        does not know is a no-op. Verified on the admin API; returns the model's routing.
        """
        version = _checked_version(version)
        current = self.get_state(model)
        names = {cluster_name(model, version), cluster_name(model, version, shadow=True)}

        def change(entry: dict | None) -> dict | None:
            written = RoutingState.from_dict(entry["state"]) if entry and entry.get("state") else None
            for routing, what in ((current, "Envoy serves"), (written, "the routing last written is")):
                if routing is not None and version in routing.versions:
                    raise SpecError("version", f"{model} v{version} still receives traffic ({what} "
                                    f"{routing.describe()})", "move its traffic to other versions first "
                                    "(set_weights, switch, or drop its header route and mirror), then forget it")
            if entry is None or version not in entry.get("versions", []):
                return None
            entry = dict(entry)
            entry["versions"] = [v for v in entry["versions"] if v != version]
            entry["forgotten"] = sorted(set(entry.get("forgotten", [])) | {version})
            return entry

        if self._change_model(model, change) is None:
            leftovers = names & self._live_clusters(model)
            if not leftovers:
                LOG.info("%s: Envoy does not know v%d; nothing to forget", model, version)
                return current
            # clusters no record names (a record lost or edited by hand): no route uses them
            self._post_change([{"type_url": CLUSTER_TYPE, "removals": sorted(leftovers)}], model)
        self._verify_forgotten(model, version, current)
        LOG.info("%s: Envoy forgot v%d (clusters %s removed); routing: %s", model, version,
                 ", ".join(sorted(names)), current.describe() if current else "none")
        return current

    def _verify_forgotten(self, model: str, version: int, expected: RoutingState | None) -> None:
        names = {cluster_name(model, version), cluster_name(model, version, shadow=True)}
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = sorted(names & self._live_clusters(model))
            doc = self._served_routes(model)
            naming = [route.get("name") for route in _main_vhost(doc).get("routes", [])
                      if route.get("name") == f"{model}-v{version}-pinned" or names & _clusters_named(route)]
            applied = parse_model_state(model, doc)
            if not (left or naming or applied != expected):
                return
            if time.monotonic() > deadline:
                raise RoutingError(f"Envoy still knows {model} v{version} after forgetting it: clusters {left}, "
                                   f"routes {naming}; it serves {applied.to_dict() if applied else None}, expected "
                                   f"{expected.to_dict() if expected else None}")
            time.sleep(0.02)

    # -- the control plane ----------------------------------------------------------------
    def _change_model(self, model: str, change) -> str | None:
        """Read the model's record, let `change` compute the next one, send it; retried while
        another writer changed the model in between. Returns the version the model's scope was
        stored at, None when `change` had nothing to do."""
        for _ in range(self.attempts):
            entry, version = self._record(model)
            new_entry = change(entry)
            if new_entry is None:
                return None
            steps = [{"type_url": CLUSTER_TYPE, "upserts": {c["name"]: c for c in self._clusters(model, new_entry)}},
                     {"type_url": SCOPE_TYPE, "upserts": {s["name"]: s for s in model_scopes(model, new_entry)},
                      "removals": _alias_scopes_dropped(model, entry, new_entry), "expect": {scope_name(model): version}}]
            dropping = {c["name"] for c in self._clusters(model, entry)} - set(steps[0]["upserts"])
            if dropping:
                # Routes stop naming the clusters before the clusters go.
                steps.append({"type_url": CLUSTER_TYPE, "removals": sorted(dropping)})
            result = self._post_change(steps, model)
            if result is not None:
                return result["steps"][1]["versions"][scope_name(model)]
        raise RoutingError(f"{model}: {self.attempts} attempts in a row found the model changed by another writer "
                           "in between; retry the change")

    def _record(self, model: str) -> tuple[dict | None, str | None]:
        """The model's record as the control plane stores it, and the version it is stored at."""
        resp = self._cp("get", f"/v1/resources/{SCOPE_TYPE.split('/', 1)[1]}/{quote(scope_name(model), safe='')}")
        if resp.status_code == 404:
            return None, None
        doc = resp.json()
        meta = doc["resource"].get("route_configuration", {}).get("metadata", {})
        return meta.get("filter_metadata", {}).get("llm_release", {}).get("record"), doc["version"]

    def _post_change(self, steps: list[dict], model: str) -> dict | None:
        resp = self._cp("post", "/v1/changes", json={"steps": steps, "timeout_s": self.timeout_s})
        if resp.status_code == 200:
            return resp.json()
        if resp.status_code == 412:
            return None  # another writer changed the model: read again
        reason = resp.json().get("error", resp.text[:300]) if resp.headers.get("content-type", "").startswith(
            "application/json") else resp.text[:300]
        if resp.status_code in (400, 409):
            raise RoutingError(f"{model}: the gateway refused the routing change ({resp.status_code}): {reason}")
        raise RoutingError(f"{model}: the routing change is not confirmed by the gateway ({resp.status_code}): "
                           f"{reason}")

    def _ensure_base(self) -> None:
        """The passthrough and shadow clusters and the base scopes, once per router."""
        if self._base_ready:
            return
        clusters = [cluster_resource(PASSTHROUGH_CLUSTER, self.upstream)]
        if self.shadow_listener:
            clusters.append(cluster_resource(SHADOW_CLUSTER, self.shadow_listener))
        self._post_change([{"type_url": CLUSTER_TYPE, "upserts": {c["name"]: c for c in clusters}},
                           {"type_url": SCOPE_TYPE, "upserts": {s["name"]: s for s in base_scopes()}}], "the gateway")
        self._base_ready = True

    def _cp(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            return requests.request(method, f"{self.control_plane_url}{path}", timeout=self.timeout_s + 5, **kwargs)
        except requests.RequestException as exc:
            raise RoutingError(f"the gateway's control plane {self.control_plane_url} is unreachable: {exc}") from exc

    # -- rendering ------------------------------------------------------------------------
    def _clusters(self, model: str, entry: dict | None) -> list[dict]:
        """Every known version's cluster, and a shadow cluster for the version mirrored to now
        only (clusters are most of what Envoy renders for each statistics scrape)."""
        if not entry or not entry.get("state"):
            return []
        clusters = []
        per_version = entry.get("topology") == "deployment_per_version"
        mirrored = RoutingState.from_dict(entry["state"]).mirror_version
        for version in entry["versions"]:
            backend = _backend(entry, version)
            clusters.append(cluster_resource(cluster_name(model, version), backend))
            shadow_target = backend if per_version else self.shadow_listener
            if shadow_target and version == mirrored:
                clusters.append(cluster_resource(cluster_name(model, version, shadow=True), shadow_target))
        return clusters

    # -- admin API ------------------------------------------------------------------------
    def _get(self, path: str, params: dict | None = None) -> requests.Response:
        try:
            resp = requests.get(f"{self.admin_url}{path}", params=params, timeout=5)
        except requests.RequestException as exc:
            raise RoutingError(f"Envoy admin {self.admin_url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise RoutingError(f"Envoy admin {path} answered {resp.status_code}: {resp.text[:200]}")
        return resp

    def _live_clusters(self, model: str) -> set[str]:
        """The model's clusters Envoy has now (one statistic each, filtered inside Envoy)."""
        text = self._get("/stats", {"filter": rf"^cluster\.{re.escape(cluster_stem(model))}_v[0-9]+(_shadow)?\."
                                              r"upstream_rq_total$"}).text
        return {line.split(".")[1] for line in text.splitlines() if line.startswith("cluster.")}

    def _served_routes(self, model: str) -> dict:
        """The model's route table as Envoy serves it ({} when Envoy has no scope for it)."""
        dump = self._get("/config_dump", {"resource": "dynamic_scoped_route_configs",
                                          "name_regex": f"^{re.escape(scope_name(model))}$"}).json()
        for entry in dump.get("configs", []):
            for scope in entry.get("scoped_route_configs", []):
                if scope.get("name") == scope_name(model):
                    return scope.get("route_configuration", {})
        return {}

    def _wait_served(self, model: str, done, written: str | None = None) -> RoutingState | None:
        """Envoy applies an acknowledged scope on its main thread: read until it shows (or until
        the model's scope is no longer the one `written`: another writer's change replaced it)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            served = self.get_state(model)
            if done(served) or time.monotonic() > deadline:
                return served
            if written is not None and self._record(model)[1] != written:
                return served
            time.sleep(0.01)


def _backend(entry: dict, version: int) -> tuple[str, int]:
    if entry.get("topology") == "deployment_per_version":
        host, port = entry["backends"][str(version)]
        return host, int(port)
    host, port = entry["upstream"]
    return host, int(port)


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


def _alias_scopes_dropped(model: str, before: dict | None, after: dict) -> list[str]:
    old = {s["name"] for s in model_scopes(model, before)} if before and before.get("state") else set()
    return sorted(old - {s["name"] for s in model_scopes(model, after)})


# -- xDS documents ------------------------------------------------------------------------
def cluster_resource(name: str, upstream: tuple[str, int]) -> dict:
    host, port = upstream
    return {
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


def _passthrough(name: str = "passthrough") -> dict:
    return {"name": name, "match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}}


def _shadow_vhosts(model: str, versions, topology: str) -> list[dict]:
    """One virtual host per version for mirrored copies (host `<model>.v<N>.shadow`), rewriting
    the primary's path for version N."""
    if topology == "deployment_per_version":
        return []  # copies go straight to the version's own backend
    hosts = []
    for version in sorted(versions):
        target = (f"/v2/models/{model}/versions/{version}/\\2" if topology != "model_per_release"
                  else f"/v2/models/{model}_r{version}/\\2")
        hosts.append({"name": f"shadow-v{version}", "domains": [shadow_host(model, version)], "routes": [{
            "match": {"prefix": "/"},
            "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s", "regex_rewrite": {
                "pattern": {"regex": f"^/v2/models/{re.escape(model)}(?:_r[0-9]+)?(/versions/[0-9]+)?/(.*)$"},
                "substitution": target}}}]})
    return hosts


def _scope(name: str, key: tuple[str, str], virtual_hosts: list[dict], record: dict | None = None) -> dict:
    routes = {"name": name, "virtual_hosts": virtual_hosts}
    if record is not None:
        routes["metadata"] = {"filter_metadata": {"llm_release": {"record": record}}}
    return {"name": name, "key": {"fragments": [{"string_key": part} for part in key]}, "route_configuration": routes}


def model_scopes(model: str, record: dict) -> list[dict]:
    """The model's scope (its route table, with the router's record of it), and in
    `model_per_release` one small scope per release name for the mirrored copies carrying it."""
    if not record or not record.get("state"):
        return []
    topology = record.get("topology", "versions")
    state = RoutingState.from_dict(record["state"])
    versions = record["versions"]
    routes = model_routes(state, versions, topology)
    if record.get("forgotten"):
        routes.append(forgotten_route(model, record["forgotten"]))
    routes.append(_passthrough(f"{model}-passthrough"))  # metadata, readiness, versions not routed
    shadows = _shadow_vhosts(model, versions, topology)
    scopes = [_scope(scope_name(model), ("models", model),
                     [*shadows, {"name": "main", "domains": ["*"], "routes": routes}], record)]
    if topology == "model_per_release":
        for version in sorted(versions):
            release = f"{model}_r{version}"
            scopes.append(_scope(scope_name(release), ("models", release),
                                 [*shadows, {"name": "main", "domains": ["*"], "routes": [_passthrough()]}]))
    return scopes


def base_scopes() -> list[dict]:
    """Triton's health endpoints pass through; its repository (load/unload) API is refused."""
    scopes = []
    for key, kind in sorted(BASE_SCOPES.items()):
        route = _passthrough() if kind == "pass" else {
            "name": "deny", "match": {"prefix": "/"},
            "direct_response": {"status": 403, "body": {"inline_string": "repository API is not exposed on the gateway\n"}}}
        scopes.append(_scope("base/" + "/".join(key), key, [{"name": "base", "domains": ["*"], "routes": [route]}]))
    return scopes


def _main_vhost(route_config_doc: dict) -> dict:
    for vhost in route_config_doc.get("virtual_hosts", []):
        if vhost.get("domains") == ["*"]:
            return vhost
    return {}


def parse_model_state(model: str, route_config_doc: dict) -> RoutingState | None:
    """Read a model's RoutingState back from a route configuration as Envoy dumps it."""
    version_of = re.compile(rf"^{re.escape(cluster_stem(model))}_v([0-9]+)(_shadow)?$")
    weights: dict[int, int] = {}
    header, header_routes = None, {}
    mirror_version, mirror_percent = None, 0
    previous = 0
    for route in _main_vhost(route_config_doc).get("routes", []):
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
