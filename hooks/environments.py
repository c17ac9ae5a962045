"""Environments from Airflow: the `llm_release_environments` Variable, its connection ids
resolved into the core's environment spec (llm_release.environments), validated eagerly.

Each entry names an environment and region and the connections of its Triton, gateway and
Prometheus; whatever an entry states itself (`triton`, `router`, `prometheus_url`, ...) wins
over what the connections say. Errors name the entry and the field.
"""

from __future__ import annotations

ENVIRONMENTS_VARIABLE = "llm_release_environments"
CONNECTION_KEYS = ("triton_conn_id", "gateway_conn_id", "prometheus_conn_id")


def _resolve(entry: dict, where: str) -> dict:
    from llm_release.errors import SpecError
    from llm_release_airflow.hooks._connection import base_url, extras
    from llm_release_airflow.hooks.gateway import GatewayHook
    from llm_release_airflow.hooks.prometheus import PrometheusHook
    from llm_release_airflow.hooks.triton import TritonHook

    if not isinstance(entry, dict):
        raise SpecError(where, f"{entry!r} is not an object", "give name, region and the connection ids")
    doc = {k: v for k, v in entry.items() if k not in CONNECTION_KEYS}
    if entry.get("gateway_conn_id") and "router" not in doc:
        part = GatewayHook(gateway_conn_id=entry["gateway_conn_id"]).environment_part()
        doc["router"] = part["router"]
        doc.setdefault("gateway_url", part["gateway_url"])
        triton = dict(doc.get("triton") or {})
        triton.setdefault("topology", part["topology"])
        if part["deployments"]:
            triton.setdefault("deployments", part["deployments"])
        doc["triton"] = triton
    if entry.get("triton_conn_id"):
        hook = TritonHook(triton_conn_id=entry["triton_conn_id"])
        conn = hook.get_connection(entry["triton_conn_id"])
        extra = extras(conn)
        triton = dict(doc.get("triton") or {})
        triton.setdefault("url", base_url(conn, 8000))
        if extra.get("model_repository"):
            triton.setdefault("model_repository", extra["model_repository"])
        doc["triton"] = triton
        if extra.get("grpc_url"):
            triton.setdefault("grpc_url", extra["grpc_url"])
        runtime = {key: extra.get(f"runtime_{key}") for key in ("image", "trtllm_version", "gpu_arch")}
        runtime["metrics_url"] = extra.get("metrics_url")
        runtime = {k: v for k, v in runtime.items() if v}
        if runtime:
            triton.setdefault("runtime", runtime)
        if extra.get("no_gpu_reason"):
            doc["disabled_checks"] = {"gpu_headroom": f"connection {entry['triton_conn_id']}: {extra['no_gpu_reason']}",
                                      **(doc.get("disabled_checks") or {})}
    if entry.get("prometheus_conn_id") and "prometheus_url" not in doc:
        doc["prometheus_url"] = PrometheusHook(prometheus_conn_id=entry["prometheus_conn_id"]).client.base_url
    return doc


def load_environments(value=None):
    """The EnvironmentSet the Variable describes (or `value`, its already-read content)."""
    import json

    from llm_release.environments import EnvironmentSet
    from llm_release.errors import SpecError

    if value is None:
        from airflow.sdk import Variable

        value = Variable.get(ENVIRONMENTS_VARIABLE, default=None)
        if value is None:
            raise SpecError(f"Variable {ENVIRONMENTS_VARIABLE}", "is not set",
                            "define where releases run (docs/releases.md); the local stack writes one")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SpecError(f"Variable {ENVIRONMENTS_VARIABLE}", f"is not JSON ({exc})", "write a JSON list") from exc
    if not isinstance(value, list) or not value:
        raise SpecError(f"Variable {ENVIRONMENTS_VARIABLE}", "is not a non-empty list", "write a JSON list of environments")
    where = f"Variable {ENVIRONMENTS_VARIABLE}"
    return EnvironmentSet.from_doc([_resolve(entry, f"{where}[{i}]") for i, entry in enumerate(value)], where=where)
