"""Airflow connections and variables for a running stack, so DAGs run against it unchanged.

Written as `connections.json` and `variables.json` (what `llm-release airflow up` imports into
Airflow's metadata database, where the UI lists them), and as `airflow.env` with
`AIRFLOW_CONN_<ID>` / `AIRFLOW_VAR_<NAME>` lines (JSON form) for `dag.test()` and one-off
`airflow` commands in a shell. The connection ids are the hooks' defaults, so a DAG written for
production only needs its real connections defined there.
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
RECORDS_CONN_ID = "llm_release_records"
ARTIFACT_BUCKET = "llm-artifacts"
ARTIFACT_PREFIX = "engines"
SYNC_TARGETS_VARIABLE = "llm_release_sync_targets"
ENVIRONMENTS_VARIABLE = "llm_release_environments"
NIGHTLY_VARIABLE = "llm_release_nightly"
REFERENCE_MODEL = "reference_lm"


def reference_checkpoint_dir(state: dict) -> Path:
    """Where `stack up` writes the reference model's checkpoint, for the nightly build."""
    return Path(state["state_dir"]) / "checkpoints" / REFERENCE_MODEL


def variables_for(state: dict) -> dict[str, object]:
    """Airflow Variables the DAGs read: the stack is one region syncing from its S3.

    Its scheduled syncs are dry runs: unpausing the hourly DAG on a laptop reports what it
    would install and changes nothing; a run triggered by hand syncs for real.
    """
    source = {"kind": "s3", "conn_id": S3_CONN_ID, "bucket": ARTIFACT_BUCKET, "prefix": ARTIFACT_PREFIX}
    return {
        SYNC_TARGETS_VARIABLE: [{
            "region": "local",
            "model_repository": state["model_repository"],
            "triton_conn_id": TRITON_CONN_ID,
            "source": source,
            "scheduled": "dry_run",
        }],
        # What the nightly build builds here: the reference model from the checkpoint `stack up`
        # wrote, tested in staging, published to the stack's S3. Scheduled runs only report.
        NIGHTLY_VARIABLE: {
            "models": [{"model": REFERENCE_MODEL, "checkpoint": str(reference_checkpoint_dir(state))}],
            "builder": "reference",
            "work_dir": str(Path(state["state_dir"]) / "builds"),
            "destination": source,
            "test_environment": "staging",
            "release_environment": "staging",
            "scheduled": "dry_run",
            # Triton on two shared CPUs: token gaps of 3 ms jitter by a millisecond from run to
            # run, so latency regressions count from 2 ms on (a GPU fleet keeps the default).
            "perf_gates": {"latency_slack_ms": 2.0},
        },
        # Where releases run, by connection: the stack plays staging and production at once.
        ENVIRONMENTS_VARIABLE: [
            {"name": "staging", "region": "local", "triton_conn_id": TRITON_CONN_ID,
             "gateway_conn_id": GATEWAY_CONN_ID, "prometheus_conn_id": PROMETHEUS_CONN_ID, "approval_required": False,
             "scheduled_retirement": "dry_run"},
            {"name": "production", "region": "local", "triton_conn_id": TRITON_CONN_ID,
             "gateway_conn_id": GATEWAY_CONN_ID, "prometheus_conn_id": PROMETHEUS_CONN_ID, "approval_required": True,
             "requires_passed": "staging", "scheduled_retirement": "dry_run"},
        ],
    }


VARIABLE_DESCRIPTIONS = {
    SYNC_TARGETS_VARIABLE: "Regions artifact_sync keeps up to date (JSON list; llm_release.artifacts.targets). "
                           "The local stack is one region whose scheduled runs are dry runs.",
    NIGHTLY_VARIABLE: "What the nightly_build DAG builds (JSON object; docs/builds.md): models with their checkpoints, "
                      "builder, work_dir, destination store, test_environment, release_environment, scheduled.",
    ENVIRONMENTS_VARIABLE: "Where releases run (JSON list; llm_release.environments): name, region, the Triton, "
                           "gateway and Prometheus connections, approval_required, requires_passed. The local stack "
                           "plays staging and production (approval, staging first).",
}


def variables_with_descriptions(state: dict) -> dict[str, dict]:
    """The variables in `airflow variables import` form, each with the description the UI shows."""
    return {key: {"value": json.dumps(value), "description": VARIABLE_DESCRIPTIONS.get(key, "")}
            for key, value in variables_for(state).items()}


def connections_for(state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, dict]:
    comps = state["components"]
    ports = state["ports"]
    access_key, secret_key, region = s3_keys
    where = f"the local stack in {state['state_dir']} (rewritten by every `llm-release stack up`)"
    return {
        TRITON_CONN_ID: {
            "conn_type": "triton",
            "description": f"Triton of {where}",
            "host": "127.0.0.1",
            "port": ports["triton_http"],
            "schema": "http",
            "extra": {"model_repository": state["model_repository"], "network_timeout": 600,
                      "grpc_url": comps["triton"]["grpc_url"], "metrics_url": comps["triton"]["metrics_url"],
                      "no_gpu_reason": "local stack: Triton on CPU (--allow-gpu-metrics=false)"},
        },
        GATEWAY_CONN_ID: {
            "description": f"Envoy gateway of {where}",
            "conn_type": "llm_gateway",
            "host": "127.0.0.1",
            "port": ports["gateway"],
            "schema": "http",
            "extra": {"router": "envoy", "admin_url": comps["envoy"]["admin_url"],
                      "control_plane_url": comps["envoy"]["control_plane_url"],
                      "upstream_host": "127.0.0.1", "upstream_port": ports["triton_http"],
                      "shadow_host": "127.0.0.1", "shadow_port": ports["envoy_shadow"]},
        },
        PROMETHEUS_CONN_ID: {
            "description": f"Prometheus of {where}",
            "conn_type": "prometheus",
            "host": "127.0.0.1",
            "port": ports["prometheus"],
            "schema": "http",
        },
        RECORDS_CONN_ID: {
            "description": f"Release records (SQLite) of {where}, shared with `llm-release history`",
            "conn_type": "sqlite",
            "host": str(Path(state["state_dir"]) / "records" / "releases.db"),
        },
        S3_CONN_ID: {
            "description": f"S3 (moto) artifact store of {where}",
            "conn_type": "aws",
            "login": access_key,
            "password": secret_key,
            "extra": {"endpoint_url": comps["s3"]["url"], "region_name": region},
        },
    }


def write_airflow_connections(state_dir: Path, state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, str]:
    """Write the files (owner-only permissions: they hold credentials) and return their paths."""
    conns = connections_for(state, s3_keys=s3_keys)
    out = state_dir / "airflow"
    out.mkdir(exist_ok=True)
    json_path = out / "connections.json"
    env_path = out / "airflow.env"
    write_atomically(json_path, json.dumps(conns, indent=2), mode=0o600)
    lines = [f"export {key}={shlex.quote(value)}" for key, value in airflow_env_vars(state, s3_keys=s3_keys).items()]
    write_atomically(out / "variables.json", json.dumps(variables_for(state), indent=2), mode=0o600)
    write_atomically(env_path, "\n".join(lines) + "\n", mode=0o600)
    return {"json": str(json_path), "env": str(env_path), "variables": str(out / "variables.json")}


def airflow_env_vars(state: dict, *, s3_keys: tuple[str, str, str]) -> dict[str, str]:
    """AIRFLOW_CONN_* and AIRFLOW_VAR_* for the stack (JSON values)."""
    env = {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in connections_for(state, s3_keys=s3_keys).items()}
    env.update({f"AIRFLOW_VAR_{key.upper()}": json.dumps(value) for key, value in variables_for(state).items()})
    return env
