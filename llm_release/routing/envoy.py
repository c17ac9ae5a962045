"""Weighted routing between Triton model versions on an Envoy we run ourselves.

Envoy reads its clusters (CDS) and routes (RDS) from files in a watched directory; writing a
new file and renaming it into place changes routing live, with no restart and no dropped
connection. Each version gets its own cluster (`<model>_v<N>`), even when one Triton serves
all versions, so the gateway counts responses per version: Triton's own failure counter
misses errors the backend returns in a response.

How a split works: Envoy draws one random number per request and evaluates every route's
`runtime_fraction` against that same number, so route i (fraction = cumulative weight up to
i) catches exactly weight i percent of requests. Requests that name a version explicitly
(`/v2/models/<m>/versions/<n>/...`) go to that version and take no part in the split.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from llm_release.errors import RoutingError, SpecError
from llm_release.fsutil import write_atomically

ROUTE_CONFIG_NAME = "llm_gateway"
PASSTHROUGH_CLUSTER = "triton"
_ENDPOINTS = "infer|generate|generate_stream"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class ModelRoute:
    """Desired routing of one model: version -> percent of unpinned traffic."""

    weights: dict[int, int]
    versions: set[int] = field(default_factory=set)  # every version with a pinned route


def validate_weights(model: str, weights: dict[int, int]) -> dict[int, int]:
    """Integers, each 0..100, summing to 100; versions positive integers."""
    if not _MODEL_NAME.match(model or ""):
        raise SpecError("model", f"{model!r} is not a valid Triton model name", "use letters, digits, _ . -")
    if not weights:
        raise SpecError("weights", "no versions given", "give at least one version with weight 100")
    clean: dict[int, int] = {}
    for version, weight in weights.items():
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SpecError("weights", f"version {version!r} is not a positive integer", "use Triton version numbers")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise SpecError(f"weights[{version}]", f"{weight!r} is not an integer percent", "use integers 0..100")
        if not 0 <= weight <= 100:
            raise SpecError(f"weights[{version}]", f"{weight} is outside 0..100", "use integers 0..100")
        clean[version] = weight
    total = sum(clean.values())
    if total != 100:
        raise SpecError("weights", f"weights sum to {total}, not 100", "make the percentages add up to exactly 100")
    return clean


def cluster_name(model: str, version: int) -> str:
    return f"{model}_v{version}"


class EnvoyRouter:
    """Routes for models on one Envoy, written as xDS files and verified on the admin API."""

    def __init__(self, xds_dir: Path, admin_url: str, upstream: tuple[str, int], *, timeout_s: float = 10.0):
        self.xds_dir = Path(xds_dir)
        self.admin_url = admin_url.rstrip("/")
        self.upstream = upstream
        self.timeout_s = timeout_s
        self._state_file = self.xds_dir / "routing-state.json"

    # -- desired state -----------------------------------------------------------------
    def _load_state(self) -> dict[str, ModelRoute]:
        if not self._state_file.exists():
            return {}
        raw = json.loads(self._state_file.read_text())
        return {
            m: ModelRoute(weights={int(v): w for v, w in r["weights"].items()}, versions=set(r["versions"]))
            for m, r in raw["models"].items()
        }

    def _state_json(self, state: dict[str, ModelRoute], generation: int) -> dict:
        return {
            "generation": generation,
            "models": {
                m: {"weights": {str(v): w for v, w in sorted(r.weights.items())}, "versions": sorted(r.versions)}
                for m, r in sorted(state.items())
            },
        }

    def get_weights(self, model: str) -> dict[int, int]:
        """The split Envoy is serving now for `model` (read back from Envoy, not from our file)."""
        dump = self._route_config_dump()
        weights: dict[int, int] = {}
        previous = 0
        for route in dump.get("virtual_hosts", [{}])[0].get("routes", []):
            meta = route.get("metadata", {}).get("filter_metadata", {}).get("llm_release", {})
            if meta.get("model") != model or meta.get("kind") != "split":
                continue
            fraction = route["match"].get("runtime_fraction", {}).get("default_value", {}).get("numerator")
            cumulative = 100 if fraction is None else int(fraction)
            weights[int(meta["version"])] = cumulative - previous
            previous = cumulative
        return weights

    # -- changes ---------------------------------------------------------------------------
    def set_weights(self, model: str, weights: dict[int, int]) -> dict[int, int]:
        """Send `weights` percent of `model`'s unversioned requests to each version; verify."""
        weights = validate_weights(model, weights)
        state = self._load_state()
        route = state.get(model, ModelRoute(weights={}))
        route.weights = {v: w for v, w in weights.items() if w > 0}
        route.versions |= set(weights)
        state[model] = route
        self._apply(state)
        applied = self.get_weights(model)
        if applied != route.weights:
            raise RoutingError(f"Envoy serves {applied} for {model}, expected {route.weights}")
        return applied

    def _apply(self, state: dict[str, ModelRoute]) -> None:
        generation = int(time.time() * 1000)
        clusters = [PASSTHROUGH_CLUSTER] + [
            cluster_name(m, v) for m, r in sorted(state.items()) for v in sorted(r.versions)
        ]
        # Clusters first: a route that names an unknown cluster answers 503.
        write_xds(self.xds_dir / "cds.json", generation, [self._cluster(c) for c in clusters])
        self._wait_for(lambda: set(clusters) <= self._live_clusters(), "clusters")
        write_xds(self.xds_dir / "rds.json", generation, [route_config(state, generation)])
        self._wait_for(lambda: self._route_config_version() == str(generation), "routes")
        write_atomically(self._state_file, json.dumps(self._state_json(state, generation), indent=2))

    def _cluster(self, name: str) -> dict:
        return cluster_resource(name, self.upstream)

    # -- admin API -------------------------------------------------------------------------
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

    def _route_dump_entry(self) -> dict:
        dump = self._get("/config_dump?resource=dynamic_route_configs").json()
        for entry in dump.get("configs", []):
            if entry.get("route_config", {}).get("name") == ROUTE_CONFIG_NAME:
                return entry
        return {}

    def _route_config_version(self) -> str | None:
        return self._route_dump_entry().get("version_info")

    def _route_config_dump(self) -> dict:
        return self._route_dump_entry().get("route_config", {})

    def _wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise RoutingError(f"Envoy did not apply the new {what} within {self.timeout_s:.0f} s")


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


def _meta(model: str, version: int, kind: str) -> dict:
    return {"filter_metadata": {"llm_release": {"model": model, "version": version, "kind": kind}}}


def model_routes(model: str, route: ModelRoute) -> list[dict]:
    """Pinned routes for every known version, then the weighted split for unpinned requests."""
    escaped = re.escape(model)
    routes = []
    for version in sorted(route.versions):
        routes.append({
            "name": f"{model}-v{version}-pinned",
            "match": {"safe_regex": {"regex": f"^/v2/models/{escaped}/versions/{version}/({_ENDPOINTS})$"}},
            "route": {"cluster": cluster_name(model, version), "timeout": "0s"},
            "metadata": _meta(model, version, "pinned"),
        })
    cumulative = 0
    ordered = sorted(route.weights.items())
    for index, (version, weight) in enumerate(ordered):
        cumulative += weight
        match: dict = {"safe_regex": {"regex": f"^/v2/models/{escaped}/({_ENDPOINTS})$"}}
        if index < len(ordered) - 1:
            match["runtime_fraction"] = {
                "default_value": {"numerator": cumulative, "denominator": "HUNDRED"},
                "runtime_key": f"llm_release.{model}.split{index}",
            }
        routes.append({
            "name": f"{model}-v{version}-split",
            "match": match,
            "route": {
                "cluster": cluster_name(model, version),
                "timeout": "0s",
                "regex_rewrite": {
                    "pattern": {"regex": f"^/v2/models/{escaped}/({_ENDPOINTS})$"},
                    "substitution": f"/v2/models/{model}/versions/{version}/\\1",
                },
            },
            "metadata": _meta(model, version, "split"),
        })
    return routes


def route_config(state: dict[str, ModelRoute], generation: int = 0) -> dict:
    routes = [r for model, route in sorted(state.items()) for r in model_routes(model, route)]
    # Anything else under /v2 (health, metadata, models without a split) goes straight to Triton.
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


def write_xds(path: Path, generation: int, resources: list[dict]) -> None:
    """Envoy's directory watcher sees only complete files: write beside, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({"version_info": str(generation), "resources": resources}, indent=1))
