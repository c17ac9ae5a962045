"""Istio: a VirtualService (routes) and a DestinationRule (one subset per version).

See llm_release.routing.kubernetes for how changes are written, retried and verified.
"""

from __future__ import annotations

import re

from kubernetes import client as k8s

from llm_release.errors import RoutingError, SpecError
from llm_release.routing.kubernetes import (
    LOG,
    PER_VERSION,
    _known,
    _KubernetesRouter,
    _Ref,
    _Template,
    referenced_versions,
)
from llm_release.routing.state import RoutingState

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class IstioRouter(_KubernetesRouter):
    """Routes inside one Istio VirtualService (+ the subsets of one DestinationRule).

    :param api_client: a `kubernetes.client.ApiClient` (see api_client_from_environment).
    :param namespace: namespace of the VirtualService and DestinationRule.
    :param virtual_service: the VirtualService's name (the chart's fullname).
    :param host: the Triton Service the routes send to, e.g. `llm-serving.ns.svc.cluster.local`.
    :param destination_rule: the DestinationRule holding the version subsets (per-version topology).
    :param port: the Service port of Triton's HTTP endpoint.
    :param subset_template: subset name of a version; also the value of its pod label.
    :param version_label: the pod label a subset selects on (the chart sets `version: <name>`).
    :param pin_header: when set, `<pin_header>: v<N>` routes pin a request to version N.
    :param conflict_retries: how many times a 409 Conflict is retried before RoutingError.
    """

    kind = provider = "istio"
    api_group, api_version = "networking.istio.io", "v1"
    plural, object_kind, routes_key = "virtualservices", "VirtualService", "http"
    crd_hint = "Istio >= 1.22 (networking.istio.io/v1)"

    def __init__(self, api_client: k8s.ApiClient, *, namespace: str, virtual_service: str, host: str,
                 destination_rule: str | None = None, port: int = 8000, subset_template: str = "v{version}",
                 version_label: str = "version", topology: str = PER_VERSION, pin_header: str | None = None,
                 conflict_retries: int = 5):
        super().__init__(api_client, namespace, virtual_service, topology=topology, pin_header=pin_header,
                         conflict_retries=conflict_retries)
        if topology == PER_VERSION and not destination_rule:
            raise SpecError("destination_rule", "deployment_per_version routes to subsets, which a DestinationRule "
                            "defines", "name the DestinationRule the chart renders (named like the VirtualService)")
        self.host = host
        self._destination_rule = _Ref("destinationrules", "DestinationRule", destination_rule)
        self.port = port
        self.subsets = _Template("subset_template", subset_template)
        self.version_label = version_label

    def _subset(self, model: str, version: int) -> str:
        name = self.subsets.render(model, version)
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise SpecError("subset_template", f"subset {name!r} is not a DNS label", "use e.g. v{version}")
        return name

    def _destination(self, model: str, version: int) -> dict:
        destination = {"host": self.host, "port": {"number": self.port}}
        if self.topology == PER_VERSION:
            destination["subset"] = self._subset(model, version)
        return destination

    def _route(self, model, name, targets, *, header=None, mirror=None) -> dict:
        match = {"uri": {"prefix": f"/v2/models/{model}/"}}
        if header:
            match["headers"] = {header[0]: {"exact": header[1]}}
        route = {"name": name, "match": [match],
                 "route": [{"destination": self._destination(model, v), "weight": w} for v, w in targets]}
        if self.topology != PER_VERSION:
            (version, _weight), = targets
            route["rewrite"] = {"uri": self._rewrite_prefix(model, version) + "/"}
        if mirror:
            route["mirror"] = self._destination(model, mirror[0])
            route["mirrorPercentage"] = {"value": float(mirror[1])}
        return route

    def _version_of(self, model: str, destination: dict, route: dict) -> int:
        if self.topology == PER_VERSION:
            subset = destination.get("subset")
            return _known(self.subsets.version_of(model, subset), f"subset {subset!r}")
        rewrite = route["rewrite"]["uri"]
        return _known(self._version_of_rewrite(model, rewrite), f"rewrite {rewrite!r}")

    def _targets(self, model, route) -> list[tuple[int, int]]:
        alone = len(route["route"]) == 1  # a lone destination takes everything, whatever its weight
        return [(self._version_of(model, d["destination"], route), d.get("weight", 100 if alone else 0))
                for d in route["route"]]

    def _header(self, route) -> tuple[str, str]:
        (name, match), = route["match"][0]["headers"].items()
        return name, match["exact"]

    def _mirror(self, model, route) -> tuple[int, int] | None:
        if "mirror" not in route:
            return None
        percent = route.get("mirrorPercentage", {}).get("value", 100.0)  # absent: everything is mirrored
        return self._version_of(model, route["mirror"], route), int(round(percent))

    def _catches_all(self, route) -> bool:
        return not route.get("match")

    # -- DestinationRule subsets ---------------------------------------------------------------------
    def _prepare_destinations(self, state: RoutingState) -> None:
        """Subsets first: a route to a subset the mesh does not know answers 503."""
        if self.topology != PER_VERSION:
            return
        wanted = {self._subset(state.model, v) for v in referenced_versions(state)}
        self._update(self._destination_rule, lambda obj: self._with_subsets(obj, wanted))
        rule = self._read(self._destination_rule)
        missing = wanted - {s.get("name") for s in (rule.get("spec") or {}).get("subsets") or []}
        if missing:
            raise RoutingError(f"{self._where(self._destination_rule)} lacks subsets {sorted(missing)} after the write")

    def _with_subsets(self, obj: dict, wanted: set[str]) -> dict:
        """Add the missing subsets; existing ones (the chart's, other models') stay as they are."""
        subsets = obj.setdefault("spec", {}).setdefault("subsets", [])
        present = {s.get("name") for s in subsets}
        subsets += [{"name": n, "labels": {self.version_label: n}} for n in sorted(wanted - present)]
        return obj

    # -- forgetting a version ------------------------------------------------------------------------
    def _ours(self, subset: dict) -> bool:
        """A subset in the form this router creates (others are the chart's or a person's)."""
        name = subset.get("name")
        return isinstance(name, str) and subset.get("labels") == {self.version_label: name} \
            and set(subset) <= {"name", "labels"}

    def _subsets_in_use(self) -> set[str]:
        """Subsets any route of the VirtualService names (any model, any owner, mirrors included)."""
        used = set()
        for route in self._routes():
            destinations = [d.get("destination") or {} for d in route.get("route") or []]
            destinations.append(route.get("mirror") or {})
            destinations += [m.get("destination") or {} for m in route.get("mirrors") or []]
            used |= {d["subset"] for d in destinations if isinstance(d, dict) and d.get("subset")}
        return used

    def _removable(self, rule: dict, name: str, in_use: set[str]) -> bool:
        subsets = (rule.get("spec") or {}).get("subsets") or []
        return any(s.get("name") == name and self._ours(s) for s in subsets) and name not in in_use

    def _forgettable_destinations(self, model: str) -> set[int]:
        if self.topology != PER_VERSION:
            return set()
        in_use = self._subsets_in_use()
        rule = self._read(self._destination_rule)
        versions = set()
        for subset in (rule.get("spec") or {}).get("subsets") or []:
            version = self.subsets.version_of(model, subset.get("name"))
            if version is not None and self._removable(rule, subset["name"], in_use):
                versions.add(version)
        return versions

    def _forget_destinations(self, model: str, version: int) -> None:
        if self.topology != PER_VERSION:
            return
        name = self._subset(model, version)

        def without_subset(rule: dict) -> dict:
            # The VirtualService is read again on every try: a route added since keeps the subset.
            in_use = self._subsets_in_use()
            subsets = (rule.get("spec") or {}).get("subsets") or []
            if self._removable(rule, name, in_use):
                rule["spec"]["subsets"] = [s for s in subsets if s.get("name") != name]
            elif any(s.get("name") == name for s in subsets):
                LOG.info("%s: subset %s kept (%s)", self._where(self._destination_rule), name,
                         "a route still names it" if name in in_use else "not created by llm-release")
            return rule

        self._update(self._destination_rule, without_subset)

    def _verify_destinations_forgotten(self, model: str, version: int) -> None:
        if self.topology != PER_VERSION:
            return
        name = self._subset(model, version)
        if self._removable(self._read(self._destination_rule), name, self._subsets_in_use()):
            raise RoutingError(f"{self._where(self._destination_rule)} still has subset {name} after forgetting "
                               f"{model} v{version}")


# -- Gateway API ------------------------------------------------------------------------------------
