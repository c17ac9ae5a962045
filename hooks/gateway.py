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
    hook_name = "LLM gateway (traffic router: Envoy, Istio, Gateway API)"  # as in provider_info (what the connection form lists)

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
    def _router_spec(self):
        """(RouterSpec, backends) from the connection's fields, each bad one named."""
        from llm_release.errors import SpecError

        extra = extras(self._conn)
        kind = extra.get("router") or "envoy"
        if kind == "envoy":
            return self._envoy(extra)
        if kind in ("istio", "gatewayapi"):
            return self._kubernetes(kind, extra)
        raise SpecError(f"connection {self.gateway_conn_id}: extra 'router'", f"{kind!r} is not a known router",
                        "use envoy, istio or gatewayapi")

    @cached_property
    def router(self):
        """The core router for this gateway (built by the one factory, llm_release.environments)."""
        from llm_release.environments import build_router

        spec, backends = self._router_spec
        return build_router(spec, topology=self.topology, backends=backends)

    def _envoy(self, extra: dict):
        from llm_release.environments import RouterSpec, build_router

        self._require(extra, "envoy", ("admin_url", "control_plane_url", "upstream_port"))
        upstream = f"{extra.get('upstream_host') or '127.0.0.1'}:{self._port(extra, 'upstream_port')}"
        shadow = (f"{extra.get('shadow_host') or '127.0.0.1'}:{self._port(extra, 'shadow_port')}"
                  if extra.get("shadow_port") else None)
        backends = extra.get("backends") or {}
        if isinstance(backends, str):
            backends = self._json(backends, "backends")
        try:
            backends = {int(v): f"{h}:{int(p)}" for v, (h, p) in backends.items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._bad("backends", f"{extra.get('backends')!r} is not version -> [host, port]",
                            'write e.g. {"1": ["triton-v1.serving.svc", 8000]}') from exc
        # The Triton behind the gateway is stated here once, as the router's own upstream.
        spec = RouterSpec.from_dict({"kind": "envoy", "admin_url": extra["admin_url"], "control_plane_url": extra["control_plane_url"],
                                     "upstream": upstream, "shadow_listener": shadow},
                                    f"connection {self.gateway_conn_id}: extra")
        return spec, backends

    @property
    def topology(self) -> str:
        """How versions map onto Triton behind this gateway (llm_release.serving)."""
        return extras(self._conn).get("topology") or ("versions" if (extras(self._conn).get("router") or "envoy") == "envoy"
                                                     else "deployment_per_version")

    def _bad(self, key: str, problem: str, fix: str):
        from llm_release.errors import SpecError

        return SpecError(f"connection {self.gateway_conn_id}: extra '{key}'", problem, fix)

    def _require(self, extra: dict, kind: str, needed: tuple[str, ...]) -> None:
        missing = [k for k in needed if extra.get(k) in (None, "")]
        if missing:
            raise self._bad(", ".join(missing), "is missing", f"the {kind} router needs {', '.join(needed)}")

    def _port(self, extra: dict, key: str) -> int:
        value = extra.get(key)
        try:
            port = int(value)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise self._bad(key, f"{value!r} is not a TCP port", "give a number between 1 and 65535")
        return port

    def _json(self, text: str, key: str):
        import json

        try:
            return json.loads(text)
        except ValueError as exc:
            raise self._bad(key, f"{text!r} is not JSON", "write a JSON object") from exc

    def _kubernetes(self, kind: str, extra: dict):
        from llm_release.environments import RouterSpec, build_router

        extra = dict(extra)
        # `service_host` is the form's name for it; connections written before that used `host`.
        extra["service_host"] = extra.get("service_host") or extra.get("host")
        self._require(extra, kind, ("namespace", "virtual_service", "service_host") if kind == "istio"
                      else ("namespace", "http_route"))
        keys = ("namespace", "virtual_service", "service_host", "destination_rule", "kubeconfig", "context") \
            if kind == "istio" else ("namespace", "http_route", "service_template", "shared_service", "kubeconfig", "context")
        return RouterSpec.from_dict({"kind": kind, **{k: extra.get(k) for k in keys}},
                                    f"connection {self.gateway_conn_id}: extra"), {}

    def environment_part(self) -> dict:
        """The connection as the gateway part of an environment spec (llm_release.environments):
        the router, its topology and the backends of a one-Triton-per-version gateway."""
        spec, backends = self._router_spec
        return {"router": spec.to_dict(), "gateway_url": self.url, "topology": self.topology,
                "deployments": {str(v): f"http://{hp}" for v, hp in backends.items()}}
    def get_conn(self):
        return self.router
