"""Airflow connections for the parts of a running stack, so DAGs run against it unchanged.

Written two ways: `connections.json` for Airflow's LocalFilesystemBackend (and for
`dag.test(conn_file_path=...)`), and `airflow.env` with `AIRFLOW_CONN_<ID>` lines (JSON form)
to source before `airflow standalone`. The connection ids are the hooks' defaults, so a DAG
written for production only needs its real connections defined there.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from llm_release.fsutil import write_atomically

TRITON_CONN_ID = "triton_default"
GATEWAY_CONN_ID = "llm_gateway_default"
PROMETHEUS_CONN_ID = "prometheus_default"
S3_CONN_ID = "llm_artifacts_s3"


def connections_for(state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, dict]:
    comps = state["components"]
    ports = state["ports"]
    access_key, secret_key, region = s3_keys
    return {
        TRITON_CONN_ID: {
            "conn_type": "triton",
            "host": "127.0.0.1",
            "port": ports["triton_http"],
            "schema": "http",
            "extra": {"grpc_port": ports["triton_grpc"], "metrics_url": comps["triton"]["metrics_url"],
                      "model_repository": state["model_repository"], "network_timeout": 600},
        },
        GATEWAY_CONN_ID: {
            "conn_type": "llm_gateway",
            "host": "127.0.0.1",
            "port": ports["gateway"],
            "schema": "http",
            "extra": {"router": "envoy", "admin_url": comps["envoy"]["admin_url"], "xds_dir": comps["envoy"]["xds_dir"],
                      "upstream_host": "127.0.0.1", "upstream_port": ports["triton_http"]},
        },
        PROMETHEUS_CONN_ID: {
            "conn_type": "prometheus",
            "host": "127.0.0.1",
            "port": ports["prometheus"],
            "schema": "http",
        },
        S3_CONN_ID: {
            "conn_type": "aws",
            "login": access_key,
            "password": secret_key,
            "extra": {"endpoint_url": comps["s3"]["url"], "region_name": region},
        },
    }


def write_airflow_connections(state_dir: Path, state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, str]:
    """Write both files (owner-only permissions: they hold credentials) and return their paths."""
    conns = connections_for(state, s3_keys=s3_keys)
    out = state_dir / "airflow"
    out.mkdir(exist_ok=True)
    json_path = out / "connections.json"
    env_path = out / "airflow.env"
    write_atomically(json_path, json.dumps(conns, indent=2), mode=0o600)
    lines = [f"export AIRFLOW_CONN_{cid.upper()}={shlex.quote(json.dumps(conn))}" for cid, conn in conns.items()]
    write_atomically(env_path, "\n".join(lines) + "\n", mode=0o600)
    return {"json": str(json_path), "env": str(env_path)}


def airflow_env_vars(state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in connections_for(state, s3_keys=s3_keys).items()}
