"""TritonHook: an Airflow connection of type `triton` -> llm_release.triton_control.TritonControl."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from llm_release_airflow.hooks._connection import base_url, extras


class TritonHook(BaseHook):
    """Talks to one Triton server's HTTP API (repository control, readiness, inference)."""

    conn_name_attr = "triton_conn_id"
    default_conn_name = "triton_default"
    conn_type = "triton"
    hook_name = "NVIDIA Triton Inference Server"  # as in provider_info (what the connection form lists)

    def __init__(self, triton_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.triton_conn_id = triton_conn_id

    @cached_property
    def client(self):
        from llm_release.triton_control import TritonControl

        conn = self.get_connection(self.triton_conn_id)
        extra = extras(conn)
        return TritonControl(base_url(conn, 8000), timeout_s=float(extra.get("network_timeout") or 600),
                             model_repository=extra.get("model_repository"))

    def get_conn(self):
        return self.client

    def runtime(self):
        """What this Triton runs, for the provenance gate (llm_release.provenance): a reader built
        from the connection's runtime fields and metrics URL, or None when it declares nothing."""
        from llm_release.environments import TritonRuntime
        from llm_release.provenance import runtime_reader

        extra = extras(self.get_connection(self.triton_conn_id))
        doc = {key: extra.get(f"runtime_{key}") for key in ("image", "trtllm_version", "gpu_arch")}
        doc["metrics_url"] = extra.get("metrics_url")
        doc = {k: v for k, v in doc.items() if v}
        if not doc:
            return None
        declared = TritonRuntime.from_dict(doc, f"connection {self.triton_conn_id}")
        return runtime_reader(self.client.base_url, metrics_url=declared.metrics_url, declared=declared)

    def test_connection(self) -> tuple[bool, str]:
        ok = self.client.is_live()
        return ok, "Triton is live" if ok else f"Triton at {self.client.base_url} is not live"
