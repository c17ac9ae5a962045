"""Environments from Airflow: the Variable's entries, their connection ids resolved into the
core's environment spec; bad entries named; the records database from its connection."""

from __future__ import annotations

import pytest

from llm_release.errors import SpecError


@pytest.fixture()
def prod_connections(connection, tmp_path, kubeconfig):
    connection("triton_eu", conn_type="triton", host="triton-eu.serving.svc", port=8000, schema="http",
               extra={"model_repository": "/models", "no_gpu_reason": "CPU pool"})
    connection("gw_eu", conn_type="llm_gateway", host="gw-eu", port=10000, schema="http", extra={
        "router": "envoy", "admin_url": "http://envoy-eu:9901", "control_plane_url": "http://xds.local:18090",
        "upstream_host": "triton-eu.serving.svc", "upstream_port": 8000, "shadow_port": 10001,
        "topology": "model_per_release"})
    connection("gw_us", conn_type="llm_gateway", extra={
        "router": "istio", "namespace": "serving", "virtual_service": "llm", "service_host": "triton.serving.svc",
        "kubeconfig": str(kubeconfig)})
    connection("triton_us", conn_type="triton", host="triton-us", port=8000)
    connection("prom", conn_type="prometheus", host="prometheus", port=9090, schema="http")


def test_entries_are_resolved_through_their_connections(prod_connections):
    from llm_release.serving import ModelPerRelease
    from llm_release_airflow.hooks.environments import load_environments

    envs = load_environments([
        {"name": "staging", "region": "eu", "triton_conn_id": "triton_eu", "gateway_conn_id": "gw_eu",
         "prometheus_conn_id": "prom"},
        {"name": "production", "region": "us", "triton_conn_id": "triton_us", "gateway_conn_id": "gw_us",
         "prometheus_conn_id": "prom", "requires_passed": "staging",
         # what an entry states itself wins over its connections: here each version's own Triton
         "triton": {"deployments": {"1": "http://triton-v1:8000", "2": "http://triton-v2:8000"}}},
    ])
    eu = envs.get("staging", "eu")
    assert eu.triton.url == "http://triton-eu.serving.svc:8000" and eu.triton.topology == "model_per_release"
    assert eu.gateway_url == "http://gw-eu:10000" and eu.prometheus_url == "http://prometheus:9090"
    assert "CPU pool" in eu.disabled_checks["gpu_headroom"]
    assert eu.router_instance().topology == "model_per_release"  # stated once, used by router and Triton
    assert isinstance(eu.served_versions(), ModelPerRelease)
    us = envs.get("production")
    assert us.approval_required and us.requires_passed == "staging"
    assert us.router_instance().kind == "istio" and us.triton.topology == "deployment_per_version"
    assert sorted(us.served_versions().tritons) == [1, 2]


def test_a_bad_entry_is_named(prod_connections):
    from llm_release_airflow.hooks.environments import load_environments

    with pytest.raises(SpecError, match=r"Variable llm_release_environments\[0\].*prometheus_url"):
        load_environments([{"name": "staging", "triton_conn_id": "triton_eu", "gateway_conn_id": "gw_eu"}])
    with pytest.raises(SpecError, match="llm_release_environments.*not JSON"):
        load_environments("[{")


def test_the_records_database_comes_from_its_connection(connection, tmp_path, monkeypatch):
    from llm_release_airflow.hooks.records import records_url

    monkeypatch.delenv("LLM_RELEASE_RECORDS_URL", raising=False)
    assert records_url("absent").endswith("/llm-release/releases.db")
    connection("records_pg", conn_type="postgres", host="db", port=5432, login="rel", password="s3cret",
               schema="releases")
    assert records_url("records_pg") == "postgresql+psycopg://rel:s3cret@db:5432/releases"
    connection("records_file", conn_type="sqlite", host=str(tmp_path / "r.db"))
    assert records_url("records_file") == f"sqlite:///{tmp_path / 'r.db'}"
