"""Fast tests of the Airflow glue (hooks, operators, the retry rule, the connection forms),
in this process and without the stack: connections come from AIRFLOW_CONN_* variables, which
Airflow resolves before any database.

Airflow reads its configuration when first imported, so the isolated AIRFLOW_HOME is set here,
when pytest loads this file, before any test module imports Airflow. Other tests never import
Airflow in this process (their DAG runs use subprocesses with their own environment).
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="llm-release-glue-airflow-")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


@pytest.fixture()
def connection(monkeypatch):
    """Define an Airflow connection for one test: connection("id", conn_type=..., host=..., extra={...})."""

    def define(conn_id: str, **fields) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
        return conn_id

    return define


@pytest.fixture()
def kubeconfig(tmp_path):
    """A kubeconfig for a cluster that is never contacted: building a router reads it, nothing more."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }))
    return str(path)
