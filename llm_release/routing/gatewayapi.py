"""Gateway API: an HTTPRoute (rules with backendRef weights, header matches, RequestMirror).

See llm_release.routing.kubernetes for how changes are written, retried and verified.
"""

from __future__ import annotations

import re

from kubernetes import client as k8s

from llm_release.errors import SpecError
from llm_release.routing.kubernetes import (
    PER_VERSION,
    _known,
    _KubernetesRouter,
    _Template,
)

_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # DNS-1035 label, at most 63


class GatewayApiRouter(_KubernetesRouter):
    """Rules inside one Gateway API HTTPRoute; its parentRefs and hostnames stay the chart's.

    :param api_client: a `kubernetes.client.ApiClient` (see api_client_from_environment).
    :param namespace: namespace of the HTTPRoute and of the backend Services.
    :param http_route: the HTTPRoute's name (the chart's fullname).
    :param service_template: backend Service of a version (deployment_per_version).
    :param shared_service: the one Triton Service (topologies versions / model_per_release).
    :param port: the Service port of Triton's HTTP endpoint.
    :param pin_header: when set, `<pin_header>: v<N>` rules pin a request to version N.
    :param conflict_retries: how many times a 409 Conflict is retried before RoutingError.
    """

    kind = provider = "gatewayapi"
    api_group, api_version = "gateway.networking.k8s.io", "v1"
    plural, object_kind, routes_key = "httproutes", "HTTPRoute", "rules"
    crd_hint = "Gateway API standard CRDs >= v1.4.0 (rule names; mirror percent needs >= v1.3.0)"

    def __init__(self, api_client: k8s.ApiClient, *, namespace: str, http_route: str,
                 service_template: str = "{model}-v{version}", shared_service: str | None = None, port: int = 8000,
                 topology: str = PER_VERSION, pin_header: str | None = None, conflict_retries: int = 5):
        super().__init__(api_client, namespace, http_route, topology=topology, pin_header=pin_header,
                         conflict_retries=conflict_retries)
        if topology != PER_VERSION and not shared_service:
            raise SpecError("shared_service", f"topology {topology} sends every route to one Triton Service",
                            "name that Service (the chart's shared Service)")
        self.services = _Template("service_template", service_template)
        self.shared_service = shared_service
        self.port = port

    def _service(self, model: str, version: int) -> str:
        if self.topology != PER_VERSION:
            return self.shared_service
        name = self.services.render(model, version)
        if not _SERVICE_NAME.match(name) or len(name) > 63:
            raise SpecError("service_template", f"backend Service {name!r} is not a valid Service name",
                            "Service names are lower-case letters, digits and '-', starting with a letter, at "
                            "most 63 characters: use a template without {model}, or one that yields such names")
        return name

    def _backend(self, model: str, version: int) -> dict:
        # group and kind are the CRD's defaults, written out so a read-back compares equal
        return {"group": "", "kind": "Service", "name": self._service(model, version), "port": self.port}

    def _route(self, model, name, targets, *, header=None, mirror=None) -> dict:
        match = {"path": {"type": "PathPrefix", "value": f"/v2/models/{model}"}}
        if header:
            match["headers"] = [{"type": "Exact", "name": header[0], "value": header[1]}]
        rule = {"name": name, "matches": [match],
                "backendRefs": [{**self._backend(model, v), "weight": w} for v, w in targets]}
        filters = []
        if self.topology != PER_VERSION:
            (version, _weight), = targets
            filters.append({"type": "URLRewrite", "urlRewrite": {"path": {
                "type": "ReplacePrefixMatch", "replacePrefixMatch": self._rewrite_prefix(model, version)}}})
        if mirror:
            percent = {} if mirror[1] == 100 else {"percent": mirror[1]}  # absent = all, on any CRD version
            filters.append({"type": "RequestMirror",
                            "requestMirror": {"backendRef": self._backend(model, mirror[0]), **percent}})
        if filters:
            rule["filters"] = filters
        return rule

    def _version_of(self, model: str, backend: dict, rule: dict) -> int:
        if self.topology == PER_VERSION:
            return _known(self.services.version_of(model, backend.get("name")), f"backend {backend.get('name')!r}")
        rewrite = next(f["urlRewrite"]["path"]["replacePrefixMatch"]
                       for f in rule.get("filters", []) if f["type"] == "URLRewrite")
        return _known(self._version_of_rewrite(model, rewrite), f"rewrite {rewrite!r}")

    def _targets(self, model, rule) -> list[tuple[int, int]]:
        return [(self._version_of(model, b, rule), b.get("weight", 1)) for b in rule["backendRefs"]]

    def _header(self, rule) -> tuple[str, str]:
        (match,) = rule["matches"][0]["headers"]
        return match["name"].lower(), match["value"]

    def _mirror(self, model, rule) -> tuple[int, int] | None:
        mirror = next((f["requestMirror"] for f in rule.get("filters", []) if f["type"] == "RequestMirror"), None)
        if mirror is None:
            return None
        if "fraction" in mirror:
            percent = round(100 * mirror["fraction"]["numerator"] / mirror["fraction"].get("denominator", 100))
        else:
            percent = mirror.get("percent", 100)
        return self._version_of(model, mirror["backendRef"], rule), percent

    def _catches_all(self, rule) -> bool:
        """No match, or only the CRD's default one (path prefix `/`)."""
        everything = {"path": {"type": "PathPrefix", "value": "/"}}
        return all(m == everything for m in rule.get("matches") or [everything])
