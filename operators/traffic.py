"""Shift traffic between model versions on the gateway, and roll a shift back exactly.

Thin: build a RoutingState from the arguments, call llm_release.routing.shift. The result
(the routing before and after) goes to XCom, so a rollback task restores exactly what was in
force, header routes and mirror included.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_release_airflow.retry_policy import ReleaseOperator


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class TrafficShiftOperator(ReleaseOperator):
    """Route `model`'s traffic: a weighted split, A/B header routes, a shadow mirror, or a switch.

    Every version that would get traffic must be READY in Triton and answer a probe first.

    :param model: Triton model name.
    :param weights: version -> integer percent, summing to 100 (e.g. {"1": 90, "2": 10}).
    :param switch_to: blue-green: all traffic to this version (instead of weights).
    :param header: header name for A/B routes (e.g. "x-experiment"); with header_routes.
    :param header_routes: header value -> version (e.g. {"B": 2}).
    :param mirror_version: shadow: version receiving copies (answers discarded).
    :param mirror_percent: percent of traffic copied to mirror_version.
    :param check_ready: refuse versions that are not READY in Triton (default True).
    """

    template_fields: Sequence[str] = ("model", "weights", "switch_to", "header", "header_routes",
                                      "mirror_version", "mirror_percent")
    ui_color = "#9ecae1"

    def __init__(self, *, model: str, weights=None, switch_to=None, header=None, header_routes=None,
                 mirror_version=None, mirror_percent=0, check_ready=True, probe=True,
                 gateway_conn_id: str = "llm_gateway_default", triton_conn_id: str = "triton_default", **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.weights = weights
        self.switch_to = switch_to
        self.header = header
        self.header_routes = header_routes
        self.mirror_version = mirror_version
        self.mirror_percent = mirror_percent
        self.check_ready = check_ready
        self.probe = probe
        self.gateway_conn_id = gateway_conn_id
        self.triton_conn_id = triton_conn_id

    def _target(self):
        from llm_release.errors import SpecError
        from llm_release.routing.state import RoutingState, parse_weights
        from llm_release.versions import parse_version

        if (self.switch_to in (None, "", "None")) == (self.weights in (None, "", "None", {})):
            raise SpecError("weights", "give either weights or switch_to", 'e.g. weights={"1": 90, "2": 10}')
        if self.switch_to not in (None, "", "None"):
            return RoutingState(self.model, {parse_version(self.switch_to, "switch_to"): 100})
        routes = {str(k): parse_version(v, f"header_routes[{k}]") for k, v in (self.header_routes or {}).items()}
        mirror = parse_version(self.mirror_version, "mirror_version") if self.mirror_version not in (None, "", "None") else None
        return RoutingState(self.model, parse_weights(self.weights), header=self.header or None, header_routes=routes,
                            mirror_version=mirror, mirror_percent=int(self.mirror_percent or 0) if mirror else 0)

    def execute(self, context) -> dict:
        from llm_release.routing.shift import shift_traffic
        from llm_release_airflow.hooks.gateway import GatewayHook
        from llm_release_airflow.hooks.triton import TritonHook

        target = self._target()
        triton = TritonHook(triton_conn_id=self.triton_conn_id).get_conn() if _flag(self.check_ready) else None
        result = shift_traffic(GatewayHook(gateway_conn_id=self.gateway_conn_id).get_conn(), target,
                               triton=triton, probe=_flag(self.probe), log=self.log)
        self.log.info("%s now routes %s (was %s), applied and read back from the gateway in %.2f s", target.model,
                      result.applied.describe(), result.previous.describe() if result.previous else "no route",
                      result.seconds)
        return result.to_dict()


class TrafficRollbackOperator(ReleaseOperator):
    """Restore a routing saved by TrafficShiftOperator (its XCom "previous"), exactly.

    :param previous: the RoutingState dict to restore, e.g.
        "{{ ti.xcom_pull(task_ids='shift')['previous'] }}" (with render_template_as_native_obj).
    """

    template_fields: Sequence[str] = ("previous",)
    ui_color = "#fc9272"

    def __init__(self, *, previous, gateway_conn_id: str = "llm_gateway_default", **kwargs):
        super().__init__(**kwargs)
        self.previous = previous
        self.gateway_conn_id = gateway_conn_id

    def execute(self, context) -> dict:
        from llm_release.errors import SpecError
        from llm_release.routing.state import RoutingState
        from llm_release_airflow.hooks.gateway import GatewayHook

        if not isinstance(self.previous, dict):
            raise SpecError("previous", f"{self.previous!r} is not a saved routing state",
                            "pass the 'previous' of a TrafficShiftOperator result")
        restored = GatewayHook(gateway_conn_id=self.gateway_conn_id).get_conn().apply(RoutingState.from_dict(self.previous))
        self.log.info("Rolled %s back: the gateway routes %s again, as before the shift", restored.model,
                      restored.describe())
        return restored.to_dict()
