"""PrometheusHook: an Airflow connection of type `prometheus` -> llm_release's Prometheus client."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from llm_release_airflow.hooks._connection import base_url


class PrometheusHook(BaseHook):
    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "prometheus_default"
    conn_type = "prometheus"
    hook_name = "Prometheus (release metrics)"  # as in provider_info (what the connection form lists)

    def __init__(self, prometheus_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.prometheus_conn_id = prometheus_conn_id

    @cached_property
    def client(self):
        from llm_release.metrics.prometheus import PrometheusClient

        return PrometheusClient(base_url(self.get_connection(self.prometheus_conn_id), 9090))

    def get_conn(self):
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        ok = self.client.is_online()
        return ok, "Prometheus is ready" if ok else "Prometheus is not ready"
