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
        from llm_release.errors import SpecError
        from llm_release.routing.envoy import EnvoyRouter

        extra = extras(self._conn)
        kind = extra.get("router", "envoy")
        if kind != "envoy":
            raise SpecError("router", f"{kind!r} is not a known router", "use envoy")
        shadow = ((extra.get("shadow_host", "127.0.0.1"), int(extra["shadow_port"]))
                  if extra.get("shadow_port") else None)
        backends = {int(v): (h, int(p)) for v, (h, p) in (extra.get("backends") or {}).items()}
        return EnvoyRouter(extra["xds_dir"], extra["admin_url"],
                           (extra.get("upstream_host", "127.0.0.1"), int(extra["upstream_port"])),
                           topology=extra.get("topology", "versions"), backends=backends, shadow_listener=shadow)

    def get_conn(self):
        return self.router
