"""GatewayHook: an Airflow connection of type `llm_gateway` -> a traffic router of the core."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from llm_release_airflow.hooks._connection import base_url, extras


class GatewayHook(BaseHook):
    """The gateway that splits traffic between model versions (Envoy today)."""

    conn_name_attr = "gateway_conn_id"
    default_conn_name = "llm_gateway_default"
    conn_type = "llm_gateway"
    hook_name = "LLM gateway (traffic router)"

    def __init__(self, gateway_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.gateway_conn_id = gateway_conn_id

    @cached_property
    def _conn(self):
        return self.get_connection(self.gateway_conn_id)

    @property
    def url(self) -> str:
        return base_url(self._conn, 80)

    @cached_property
    def router(self):
        """The core router for this gateway: Envoy directly, or Istio / Gateway API objects."""
        from llm_release.errors import SpecError

        extra = extras(self._conn)
        kind = extra.get("router", "envoy")
        if kind == "envoy":
            return self._envoy(extra)
        if kind in ("istio", "gatewayapi"):
            return self._kubernetes(kind, extra)
        raise SpecError(f"connection {self.gateway_conn_id}: extra 'router'", f"{kind!r} is not a known router",
                        "use envoy, istio or gatewayapi")

    @staticmethod
    def _envoy(extra: dict):
        from llm_release.routing.envoy import EnvoyRouter

        shadow = ((extra.get("shadow_host", "127.0.0.1"), int(extra["shadow_port"]))
                  if extra.get("shadow_port") else None)
        backends = {int(v): (h, int(p)) for v, (h, p) in (extra.get("backends") or {}).items()}
        return EnvoyRouter(extra["xds_dir"], extra["admin_url"],
                           (extra.get("upstream_host", "127.0.0.1"), int(extra["upstream_port"])),
                           topology=extra.get("topology", "versions"), backends=backends, shadow_listener=shadow)

    def _kubernetes(self, kind: str, extra: dict):
        from llm_release.errors import SpecError
        from llm_release.routing.gatewayapi import GatewayApiRouter
        from llm_release.routing.istio import IstioRouter
        from llm_release.routing.kubernetes import api_client_from_environment

        needed = ("namespace", "virtual_service", "host") if kind == "istio" else ("namespace", "http_route")
        missing = [k for k in needed if not extra.get(k)]
        if missing:
            raise SpecError(f"connection {self.gateway_conn_id}: extra {missing}", "is missing",
                            f"a {kind} gateway needs {', '.join(needed)}")
        client = api_client_from_environment(kubeconfig=extra.get("kubeconfig"), context=extra.get("context"))
        topology = extra.get("topology", "deployment_per_version")
        if kind == "istio":
            return IstioRouter(client, namespace=extra["namespace"], virtual_service=extra["virtual_service"],
                               host=extra["host"], destination_rule=extra.get("destination_rule"), topology=topology)
        return GatewayApiRouter(client, namespace=extra["namespace"], http_route=extra["http_route"],
                                service_template=extra.get("service_template", "{model}-v{version}"), topology=topology)

    def get_conn(self):
        return self.router
