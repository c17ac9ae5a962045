"""Traffic routing on Kubernetes: Istio VirtualService and Gateway API HTTPRoute.

The Helm chart (charts/llm-release-serving, `traffic.provider`) creates the objects; these
routers only rewrite, inside them, the routes of the models they are asked about, through the
official client's custom objects API (the kubeconfig or the pod's service account).

Ownership: every route we write carries a name `llm-release.<model>.<kind>[.<key>]` (kinds:
`split`, `ab` per header value, `pin` per version). The dots matter: a model's part is a DNS
label (hash-suffixed when the model name is not one already) and never contains a dot, so no
model's routes can be mistaken for another's. Every other route of the object (the chart's, a
person's, another model's) is preserved untouched, in place.

Per model, in order: pin routes (`<pin_header>: v<N>` reaches N, for probes and golden prompts),
header routes (A/B: `x-experiment: B` -> a version), then the split of everything else, which
also carries the mirror (shadow: a percentage of requests copied to a version, its answers
discarded by the proxy; the mesh still counts them). Blue-green is a split of 100 to one version.
A model's routes match its own URLs only: Istio `uri.prefix: /v2/models/<m>/`, Gateway API
`PathPrefix /v2/models/<m>` (element-wise: `<m>2` is not caught). The first time, they go before
the object's first foreign catch-all route: Istio takes the first route that matches (the
Gateway API ranks matches by specificity, so there the position only breaks ties).

Writes never lose a concurrent edit: each change is a GET, a new spec computed from what was
read (foreign routes kept), and a PUT carrying the GET's `metadata.resourceVersion`; the API
server answers 409 Conflict when someone wrote in between, and the router reads again and
recomputes, up to `conflict_retries` times. Writes ask for strict field validation, so a field
the cluster's CRD does not know fails loudly instead of being dropped. After each change the
router reads the object back and verifies it serves exactly the state asked for.

Forgetting a version (`forget`): once a version receives no traffic (refused otherwise), its
pin routes are removed from the object and, for Istio, its DestinationRule subset, unless a
route of the VirtualService still names that subset (subset names such as `v3` may be shared by
several models) or the subset is not in the form this router writes. Gateway API backend
Services belong to the chart and are left alone.

Topologies (names as in the Envoy router):

- `deployment_per_version` (default): one Triton deployment per version; the split is between
  per-version destinations: Istio subsets of one Service (a DestinationRule subset per version,
  selected by a pod label, created here when missing) or Gateway API backend Services
  (`{model}-v{version}`). Each version is its own cluster, so the mesh counts responses per
  version. Everything is available: weighted split, header routes, pins, mirror.
- `versions` / `model_per_release`: one Triton serves every version; a route reaches version N
  by rewriting the URL (`/v2/models/<m>/...` -> `/v2/models/<m>/versions/<N>/...`, or the model
  name `<m>_r<N>`). LIMITATION: Istio and the Gateway API rewrite per route, never per weighted
  destination, so a split between versions of one Triton cannot be expressed; and Envoy-based
  proxies copy a mirrored request after the route's rewrite, so it would reach the serving
  version again.
  On these routers the shared topologies therefore allow whole-route moves only (blue-green
  switch, header routes, pins); asking for a split or a mirror raises SpecError before any
  request. Use `deployment_per_version`, or the Envoy router, for canary splits and shadowing.

Schemas written (checked against the sources, 2026):

- Istio networking.istio.io/v1 (Istio >= 1.22): VirtualService `http[]` routes with `name`,
  `match[].uri.prefix`, `match[].headers.<lower-case name>.exact`, `route[].destination{host,
  subset, port.number}` + integer `weight`, `rewrite.uri` (replaces the matched prefix), and
  `mirror` (a Destination) + `mirrorPercentage.value` (double, absent = 100%). The newer
  `mirrors` list (Istio 1.19+) is not used: `mirror` works on every Istio with the v1 API.
  DestinationRule `subsets[]{name, labels}`.
  https://istio.io/latest/docs/reference/config/networking/virtual-service/
  https://istio.io/latest/docs/reference/config/networking/destination-rule/
- Gateway API gateway.networking.k8s.io/v1 HTTPRoute: `rules[]{name, matches[]{path{type:
  PathPrefix, value}, headers[]{type: Exact, name, value}}, backendRefs[]{group, kind, name,
  port, weight 0..1000000}, filters[]}`; `URLRewrite` with `ReplacePrefixMatch` (exactly one
  PathPrefix match per rule), `RequestMirror{backendRef, percent 0..100}`. Rule `name` is in the
  standard channel since v1.4.0 (experimental in v1.2-v1.3); mirror `percent`/`fraction` since
  v1.3.0 (experimental in v1.2), so a 100% mirror is written without `percent` (absent means
  every request) and works on older CRDs too. At most 16 rules per HTTPRoute.
  https://gateway-api.sigs.k8s.io/reference/spec/#httproute
  https://gateway-api.sigs.k8s.io/geps/gep-3171/
"""

from __future__ import annotations

import abc
import copy
import hashlib
import json
import logging
import re
from collections.abc import Callable
from typing import NamedTuple

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from llm_release.errors import RoutingError, SpecError
from llm_release.routing.base import TrafficRouter
from llm_release.routing.state import HEADER_NAME, RoutingState, validate_state

LOG = logging.getLogger(__name__)

PER_VERSION = "deployment_per_version"
TOPOLOGIES = ("versions", "model_per_release", PER_VERSION)
ROUTE_PREFIX = "llm-release"
SPLIT, AB, PIN = "split", "ab", "pin"


def api_client_from_environment(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """In a pod: its service account. Elsewhere, or when a kubeconfig or context is named: the
    kubeconfig ($KUBECONFIG or ~/.kube/config by default)."""
    configuration = k8s.Configuration()
    if kubeconfig is None and context is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    try:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration, persist_config=False)
    except (k8s_config.ConfigException, OSError) as exc:
        raise RoutingError(f"no Kubernetes credentials: not in a pod, and no usable kubeconfig ({exc}); "
                           "check the kubeconfig/service account", permanent=True) from exc
    return k8s.ApiClient(configuration)


# -- route names ----------------------------------------------------------------------------
def slug(text: str) -> str:
    """A DNS label standing for `text` (Gateway API rule names are DNS subdomains); a hash
    suffix keeps names that differ only in case or punctuation (`a_b`, `a-b`) apart."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
    return label if label == text else f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def route_name(model: str, kind: str, key: str | None = None) -> str:
    return ".".join([ROUTE_PREFIX, slug(model), kind] + ([slug(key)] if key is not None else []))


def route_kind(model: str, name) -> str | None:
    """SPLIT / AB / PIN when the route named `name` is one we wrote for `model`, else None."""
    parts = name.split(".") if isinstance(name, str) else []
    if len(parts) >= 3 and parts[0] == ROUTE_PREFIX and parts[1] == slug(model):
        return parts[2]
    return None


def referenced_versions(state: RoutingState) -> set[int]:
    """Every version a route names: split, header routes, mirror (each needs its destination)."""
    mirror = {state.mirror_version} if state.mirror_percent else set()
    return set(state.weights) | set(state.header_routes.values()) | mirror


def _normalized(state: RoutingState) -> RoutingState:
    """The state as it reads back: no header name without header routes, no 0% mirror."""
    return state.with_header_routes(state.header, state.header_routes).with_mirror(state.mirror_version,
                                                                                   state.mirror_percent)


class _Conflict(Exception):
    """409 from the API server: someone else wrote the object since we read it."""


class _Ref(NamedTuple):
    """One custom object this router reads and writes."""

    plural: str
    kind: str
    name: str


class _Template:
    """A name template such as `{model}-v{version}`, rendered and parsed back."""

    def __init__(self, field: str, template: str):
        try:
            template.format(model="m", version=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise SpecError(field, f"{template!r} is not a template of {{model}} and {{version}} ({exc})",
                            "use only the placeholders {model} and {version}") from exc
        if template.count("{version}") != 1:
            raise SpecError(field, f"{template!r} must contain {{version}} exactly once", "e.g. {model}-v{version}")
        self.template = template

    def render(self, model: str, version: int) -> str:
        return self.template.format(model=model, version=version)

    def version_of(self, model: str, name: str) -> int | None:
        return _parse_version(self.template.format(model=model, version="\0"), name)


def _parse_version(rendered: str, text) -> int | None:
    """The version in `text`, given the same text rendered with a NUL for the version."""
    before, after = rendered.split("\0")
    found = re.fullmatch(re.escape(before) + "([0-9]+)" + re.escape(after), text if isinstance(text, str) else "")
    return int(found.group(1)) if found else None


def _known(version: int | None, what: str) -> int:
    if version is None:
        raise ValueError(f"{what} names no version this router writes")
    return version


# -- the common part ------------------------------------------------------------------------
class _KubernetesRouter(TrafficRouter):
    """Read-modify-write of one custom object's route list, with conflict retries and read-back.

    Subclasses say where the routes live (`routes_key`), how one route to given versions is
    written (`_route`) and read back (`_targets`, `_header`, `_mirror`), and which foreign routes
    catch everything (`_catches_all`): new routes go before those, as proxies take the first
    route that matches.
    """

    api_group = api_version = plural = object_kind = routes_key = provider = crd_hint = ""

    def __init__(self, api_client: k8s.ApiClient, namespace: str, name: str, *, topology: str,
                 pin_header: str | None, conflict_retries: int):
        if topology not in TOPOLOGIES:
            raise SpecError("topology", f"{topology!r} is not a known topology", f"use one of {', '.join(TOPOLOGIES)}")
        if pin_header is not None and not HEADER_NAME.match(pin_header):
            raise SpecError("pin_header", f"{pin_header!r} is not a header name",
                            "use a lower-case name like x-llm-release-version")
        if isinstance(conflict_retries, bool) or not isinstance(conflict_retries, int) or conflict_retries < 0:
            raise SpecError("conflict_retries", f"{conflict_retries!r} is not a count", "use an integer >= 0")
        self.namespace = namespace
        self.name = name
        self.topology = topology
        self.pin_header = pin_header
        self.conflict_retries = conflict_retries
        self._object = _Ref(self.plural, self.object_kind, name)
        self._api = k8s.CustomObjectsApi(api_client)

    # -- TrafficRouter ------------------------------------------------------------------------
    def get_state(self, model: str) -> RoutingState | None:
        """Parsed from the object as the API server holds it now (None: no split for `model`)."""
        obj = self._read(self._object)
        return self._state_of(model, (obj.get("spec") or {}).get(self.routes_key) or [])

    def apply(self, state: RoutingState) -> RoutingState:
        expected = self._checked(state)
        self._prepare_destinations(expected)
        self._update(self._object, lambda obj: self._with_routes(obj, expected))
        applied = self.get_state(expected.model)
        if applied != expected:
            raise RoutingError(f"{self._where()} serves {applied.to_dict() if applied else 'no route'} for "
                               f"{expected.model} after the write, expected {expected.to_dict()}")
        LOG.info("%s: %s now routes %s", self._where(), expected.model, expected.to_dict())
        return applied

    def known_versions(self, model: str) -> set[int]:
        """Versions receiving traffic, with a pin route, or with a destination `forget` would remove."""
        routes = self._routes()
        current = self._state_of(model, routes)
        pinned = {v for r in routes if route_kind(model, r.get("name")) == PIN for v in self._route_versions(model, r)}
        return (set(current.versions) if current else set()) | pinned | self._forgettable_destinations(model)

    def forget(self, model: str, version: int) -> RoutingState | None:
        """Remove `version`'s pin routes (and, for Istio, its subset); see the module docstring."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise SpecError("version", f"{version!r} is not a positive integer",
                            "use Triton version numbers 1, 2, 3, ...")
        current = self.get_state(model)
        self._refuse_while_routed(current, model, version)
        # The check runs again on every read inside the update: a state applied in between wins.
        self._update(self._object, lambda obj: self._without_pins(obj, model, version))
        self._forget_destinations(model, version)
        routes = self._routes()
        applied = self._state_of(model, routes)
        left = sorted(r.get("name") for r in routes if route_kind(model, r.get("name"))
                      and version in self._route_versions(model, r))
        if left or applied != current:
            raise RoutingError(f"{self._where()} still names {model} v{version} after forgetting it (routes {left}); "
                               f"it serves {applied.to_dict() if applied else 'no route'}, expected "
                               f"{current.to_dict() if current else 'no route'}")
        self._verify_destinations_forgotten(model, version)
        LOG.info("%s: %s v%d forgotten; routing: %s", self._where(), model, version,
                 current.describe() if current else "none")
        return applied

    def _refuse_while_routed(self, state: RoutingState | None, model: str, version: int) -> None:
        if state is not None and version in state.versions:
            raise SpecError("version", f"{model} v{version} still receives traffic ({self._where()} serves "
                            f"{state.describe()})", "move its traffic to other versions first (set_weights, "
                            "switch, or drop its header route and mirror), then forget it")

    def _without_pins(self, obj: dict, model: str, version: int) -> dict:
        routes = (obj.get("spec") or {}).get(self.routes_key) or []
        self._refuse_while_routed(self._state_of(model, routes), model, version)
        pin = route_name(model, PIN, f"v{version}")
        kept = [r for r in routes if not (route_kind(model, r.get("name")) == PIN
                                          and (r.get("name") == pin or version in self._route_versions(model, r)))]
        if len(kept) != len(routes):
            obj["spec"][self.routes_key] = kept
        return obj

    def _route_versions(self, model: str, route: dict) -> set[int]:
        """Every version one of our routes names (destinations and mirror)."""
        try:
            mirror = self._mirror(model, route)
            return {v for v, _ in self._targets(model, route)} | ({mirror[0]} if mirror else set())
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise RoutingError(f"{self._where()}: route {route.get('name')!r} is not in the form llm-release "
                               f"writes ({exc!r}); apply a state to rewrite it") from exc

    def _routes(self) -> list[dict]:
        return (self._read(self._object).get("spec") or {}).get(self.routes_key) or []

    def _forgettable_destinations(self, model: str) -> set[int]:
        """Versions whose destination (Istio subset) `forget` would remove."""
        return set()

    def _forget_destinations(self, model: str, version: int) -> None:
        """Remove the version's destination where this router created it (Istio: the subset)."""

    def _verify_destinations_forgotten(self, model: str, version: int) -> None:
        """Raise RoutingError when a destination `forget` should have removed is still there."""

    # -- checks before any request ----------------------------------------------------------------
    def _checked(self, state: RoutingState) -> RoutingState:
        """Validate (SpecError, before any request) and return the state as it will read back."""
        validate_state(state)
        if self.pin_header and state.header_routes and state.header == self.pin_header:
            raise SpecError("header", f"{state.header!r} is this router's pin header",
                            "use another header for A/B routes, e.g. x-experiment")
        if self.topology != PER_VERSION:
            self._refuse_what_needs_a_rewrite_per_destination(state)
        return self._buildable(_normalized(state))

    def _refuse_what_needs_a_rewrite_per_destination(self, state: RoutingState) -> None:
        """One Triton for every version: only whole routes can move (see the module docstring)."""
        if len(state.weights) > 1:
            raise SpecError("weights", f"a split between versions {sorted(state.weights)} of one Triton "
                            f"({self.topology}) needs a URL rewrite per weighted destination, which "
                            f"{self.object_kind} cannot express",
                            "serve one Triton deployment per version (topology deployment_per_version), "
                            "or route through the Envoy router; a whole switch (100 to one version) works")
        if state.mirror_percent:
            raise SpecError("mirror_version", f"a mirrored copy carries the primary route's rewritten URL, so on "
                            f"one Triton ({self.topology}) it would reach the serving version again",
                            "mirror with topology deployment_per_version, or through the Envoy router")

    def _buildable(self, state: RoutingState) -> RoutingState:
        """Building the routes once checks every name they contain (subsets, Services)."""
        self._model_routes(state)
        return state

    def _prepare_destinations(self, state: RoutingState) -> None:
        """Make every destination the routes will name exist (Istio: DestinationRule subsets)."""

    # -- building ---------------------------------------------------------------------------------
    def _with_routes(self, obj: dict, state: RoutingState) -> dict:
        spec = obj.setdefault("spec", {})
        spec[self.routes_key] = self._merged(spec.get(self.routes_key) or [], self._model_routes(state), state.model)
        return obj

    def _model_routes(self, state: RoutingState) -> list[dict]:
        model = state.model
        pins = [self._route(model, route_name(model, PIN, f"v{v}"), [(v, 100)], header=(self.pin_header, f"v{v}"))
                for v in sorted(referenced_versions(state))] if self.pin_header else []
        header_routes = [self._route(model, route_name(model, AB, value), [(v, 100)], header=(state.header, value))
                         for value, v in sorted(state.header_routes.items())]
        mirror = (state.mirror_version, state.mirror_percent) if state.mirror_percent else None
        split = self._route(model, route_name(model, SPLIT), sorted(state.weights.items()), mirror=mirror)
        return pins + header_routes + [split]

    def _merged(self, routes: list[dict], own: list[dict], model: str) -> list[dict]:
        """Ours replace ours where they were; the first time, they go before the first foreign
        catch-all route (or last). Foreign routes keep their order and content."""
        mine = [i for i, r in enumerate(routes) if route_kind(model, r.get("name"))]
        foreign = [r for r in routes if not route_kind(model, r.get("name"))]
        at = mine[0] if mine else next((i for i, r in enumerate(foreign) if self._catches_all(r)), len(foreign))
        return foreign[:at] + own + foreign[at:]

    def _rewrite_prefix(self, model: str, version) -> str:
        """Where a shared-Triton route sends `/v2/models/<model>` (no trailing slash)."""
        if self.topology == "versions":
            return f"/v2/models/{model}/versions/{version}"
        return f"/v2/models/{model}_r{version}"

    def _version_of_rewrite(self, model: str, prefix: str) -> int | None:
        return _parse_version(self._rewrite_prefix(model, "\0"), prefix.rstrip("/"))

    # -- reading back -------------------------------------------------------------------------------
    def _state_of(self, model: str, routes: list[dict]) -> RoutingState | None:
        split = next((r for r in routes if route_kind(model, r.get("name")) == SPLIT), None)
        if split is None:
            return None
        try:
            ab = [r for r in routes if route_kind(model, r.get("name")) == AB]
            header, header_routes = self._header_routes(model, ab)
            mirror = self._mirror(model, split)
            return RoutingState(model, dict(self._targets(model, split)), header, header_routes,
                                mirror[0] if mirror else None, mirror[1] if mirror else 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise RoutingError(f"{self._where()}: the routes of {model} are not in the form llm-release writes "
                               f"({exc!r}); apply a state to rewrite them") from exc

    def _header_routes(self, model: str, routes: list[dict]) -> tuple[str | None, dict[str, int]]:
        headers, header_routes = set(), {}
        for route in routes:
            name, value = self._header(route)
            (version, _weight), = self._targets(model, route)
            headers.add(name)
            header_routes[value] = version
        if len(headers) > 1:
            raise ValueError(f"header routes on several headers {sorted(headers)}")
        return (headers.pop() if headers else None), header_routes

    # -- the API ------------------------------------------------------------------------------------
    def _update(self, ref: _Ref, change: Callable[[dict], dict]) -> None:
        """GET, change, PUT with the GET's resourceVersion; on 409 start again from a fresh GET.
        Nothing is written when the change changes nothing."""
        for attempt in range(self.conflict_retries + 1):
            current = self._read(ref)
            desired = change(copy.deepcopy(current))
            if desired == current:
                return
            try:
                self._call("update", ref, self._api.replace_namespaced_custom_object, self.api_group, self.api_version,
                           self.namespace, ref.plural, ref.name, desired, field_validation="Strict")
                return
            except _Conflict:
                LOG.info("%s changed since we read it (409 Conflict); reading it again (retry %d of %d)",
                         self._where(ref), attempt + 1, self.conflict_retries)
        raise RoutingError(f"{self._where(ref)} was changed by someone else between our read and our write "
                           f"{self.conflict_retries + 1} times in a row (409 Conflict); another controller may be "
                           "rewriting it: find it, then retry")

    def _read(self, ref: _Ref) -> dict:
        return self._call("get", ref, self._api.get_namespaced_custom_object, self.api_group, self.api_version,
                          self.namespace, ref.plural, ref.name)

    def _call(self, verb: str, ref: _Ref, method, *args, **kwargs) -> dict:
        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise _Conflict() from exc
            raise self._api_error(exc, verb, ref) from exc
        except urllib3.exceptions.HTTPError as exc:
            host = self._api.api_client.configuration.host
            raise RoutingError(f"Kubernetes API at {host} unreachable ({verb} {self._where(ref)}): {exc}") from exc

    def _api_error(self, exc: ApiException, verb: str, ref: _Ref) -> RoutingError:
        """An error that says what to fix; a refusal (4xx) is permanent, a server error is not."""
        message, where = _status_message(exc), self._where(ref)
        if exc.status in (401, 403):
            return RoutingError(f"Kubernetes API refused to {verb} {where} (HTTP {exc.status} {exc.reason}: "
                                f"{message}); check the kubeconfig/service account and its RBAC (get and update on "
                                f"{ref.plural}.{self.api_group} in namespace {self.namespace})", permanent=True)
        if exc.status == 404:
            return RoutingError(f"{where} not found (HTTP 404: {message}); create it with the Helm chart first "
                                f"(charts/llm-release-serving with traffic.provider={self.provider}), which also "
                                f"needs the {self.api_group}/{self.api_version} CRDs installed", permanent=True)
        if exc.status == 400 and "unknown field" in message:
            return RoutingError(f"Kubernetes API rejected the {where} we wrote (HTTP 400: {message}); the "
                                f"cluster's CRDs are older than this router needs: {self.crd_hint}", permanent=True)
        # Other 4xx answers refuse what we sent; a 5xx or 429 may pass on a later try.
        return RoutingError(f"Kubernetes API answered HTTP {exc.status} to {verb} {where}: {message}",
                            permanent=400 <= (exc.status or 0) < 500 and exc.status != 429)

    def _where(self, ref: _Ref | None = None) -> str:
        ref = ref or self._object
        return f"{ref.kind} {self.namespace}/{ref.name}"

    # -- per API --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _route(self, model: str, name: str, targets: list[tuple[int, int]], *,
               header: tuple[str, str] | None = None, mirror: tuple[int, int] | None = None) -> dict:
        """One route for `model` to (version, weight) targets, optionally on a header, with a mirror."""

    @abc.abstractmethod
    def _targets(self, model: str, route: dict) -> list[tuple[int, int]]:
        """(version, weight) of each destination of a route we wrote."""

    @abc.abstractmethod
    def _header(self, route: dict) -> tuple[str, str]:
        """(name, value) of the header a route we wrote matches on."""

    @abc.abstractmethod
    def _mirror(self, model: str, route: dict) -> tuple[int, int] | None:
        """(version, percent) of the route's mirror, or None."""

    @abc.abstractmethod
    def _catches_all(self, route: dict) -> bool:
        """Whether a (foreign) route matches every request."""


def _status_message(exc: ApiException) -> str:
    """The API server's explanation, from the Status object in the body."""
    try:
        return json.loads(exc.body or "{}").get("message") or exc.reason or ""
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason)[:300]


# -- Istio ----------------------------------------------------------------------------------------
