"""Istio and Gateway API routers through the official kubernetes client, against the API server
double: the objects written pass the CRD schemas, read back equal what was asked, keep every
foreign route, survive a concurrent edit (409, retried, nothing lost) and fail clearly."""

from __future__ import annotations

import copy

import pytest
import yaml
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from llm_release.errors import RoutingError, SpecError
from llm_release.routing.gatewayapi import GatewayApiRouter
from llm_release.routing.istio import IstioRouter
from llm_release.routing.kubernetes import api_client_from_environment, route_name
from llm_release.routing.state import RoutingState
from tests.doubles.kubernetes import KubernetesApiDouble

NS = "llm"
NAME = "llm-serving"  # the chart's fullname: VirtualService, DestinationRule, HTTPRoute
HOST = f"{NAME}.{NS}.svc.cluster.local"
MODEL = "reference_lm"
OTHER_MODEL = "embedder"
ISTIO = ("networking.istio.io", "v1")
GATEWAY = ("gateway.networking.k8s.io", "v1")
WRITES = ("PUT", "POST", "PATCH")


def chart_virtual_service() -> dict:
    """As charts/llm-release-serving renders it (traffic.provider=istio, one version "stable")."""
    destination = {"host": HOST, "subset": "stable", "port": {"number": 8000}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": NAME},
            "spec": {"hosts": [HOST], "http": [
                {"name": "pin-stable", "match": [{"headers": {"x-llm-release-version": {"exact": "stable"}}}],
                 "timeout": "600s", "route": [{"destination": destination}]},
                {"name": "weighted", "timeout": "600s", "retries": {"attempts": 0},
                 "route": [{"destination": destination, "weight": 100}]},
            ]}}


def chart_destination_rule() -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": NAME},
            "spec": {"host": HOST, "trafficPolicy": {"connectionPool": {"http": {"http2MaxRequests": 1000}}},
                     "subsets": [{"name": "stable", "labels": {"llm-release/serving-version": "stable"}}]}}


def chart_http_route() -> dict:
    """As the chart renders it (traffic.provider=gatewayapi, GAMMA parent: the shared Service)."""
    backend = {"group": "", "kind": "Service", "name": f"{NAME}-stable", "port": 8000}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": NAME},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": NAME, "port": 8000}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                              "headers": [{"type": "Exact", "name": "x-llm-release-version", "value": "stable"}]}],
                 "timeouts": {"request": "600s"}, "backendRefs": [backend]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "timeouts": {"request": "600s"},
                 "backendRefs": [{**backend, "weight": 100}]},
            ]}}


class Mesh:
    """One of the two routers, its object in the double, and how to look at its routes."""

    def __init__(self, kind: str, double: KubernetesApiDouble, api_client: ApiClient):
        self.kind = kind
        self.double = double
        self.api_client = api_client
        self.plural, self.routes_key = ("virtualservices", "http") if kind == "istio" else ("httproutes", "rules")
        self._seed_writes = 0

    def seed(self) -> None:
        """Create the chart's objects as `helm install` would, through the API."""
        api = CustomObjectsApi(self.api_client)
        if self.kind == "istio":
            api.create_namespaced_custom_object(*ISTIO, NS, "virtualservices", chart_virtual_service())
            api.create_namespaced_custom_object(*ISTIO, NS, "destinationrules", chart_destination_rule())
        else:
            api.create_namespaced_custom_object(*GATEWAY, NS, "httproutes", chart_http_route())
        self._seed_writes = self._all_writes()

    def router(self, api_client: ApiClient | None = None, **options):
        client = api_client or self.api_client
        if self.kind == "istio":
            return IstioRouter(client, namespace=NS, virtual_service=NAME, host=HOST, destination_rule=NAME, **options)
        options.setdefault("service_template", f"{NAME}-v{{version}}")
        return GatewayApiRouter(client, namespace=NS, http_route=NAME, **options)

    def stored(self) -> dict:
        return self.double.stored(self.plural, NS, NAME)

    def routes(self) -> list[dict]:
        return self.stored()["spec"][self.routes_key]

    def route(self, name: str) -> dict:
        return next(r for r in self.routes() if r.get("name") == name)

    def foreign(self) -> list[dict]:
        return [r for r in self.routes() if not str(r.get("name", "")).startswith("llm-release.")]

    def writes(self) -> int:
        """Writes since the chart's objects were created."""
        return self._all_writes() - self._seed_writes

    def _all_writes(self) -> int:
        return sum(self.double.count(method) for method in WRITES)


@pytest.fixture()
def double():
    with KubernetesApiDouble() as server:
        yield server


def client_for(double: KubernetesApiDouble, token: str | None = None) -> ApiClient:
    token = double.token if token is None else token
    return ApiClient(Configuration(host=double.url, api_key={"authorization": f"Bearer {token}"}))


@pytest.fixture(params=["istio", "gatewayapi"])
def mesh(request, double) -> Mesh:
    seeded = Mesh(request.param, double, client_for(double))
    seeded.seed()
    return seeded


def split_targets(mesh: Mesh, route: dict) -> list[tuple[str, int]]:
    """(subset or Service, weight) of a split, whichever API."""
    if mesh.kind == "istio":
        return [(d["destination"]["subset"], d["weight"]) for d in route["route"]]
    return [(b["name"], b["weight"]) for b in route["backendRefs"]]


def version_ref(mesh: Mesh, version: int) -> str:
    return f"v{version}" if mesh.kind == "istio" else f"{NAME}-v{version}"


# -- writing and reading back ------------------------------------------------------------------------
def test_weights_90_10_are_written_in_the_documented_schema_and_read_back(mesh):
    router = mesh.router()
    applied = router.set_weights(MODEL, {1: 90, 2: 10})

    assert applied == RoutingState(MODEL, {1: 90, 2: 10})
    assert router.get_state(MODEL) == applied
    assert mesh.double.violations(mesh.plural, mesh.stored()) == []
    split = mesh.route(route_name(MODEL, "split"))
    assert split_targets(mesh, split) == [(version_ref(mesh, 1), 90), (version_ref(mesh, 2), 10)]
    if mesh.kind == "istio":
        assert split["match"] == [{"uri": {"prefix": f"/v2/models/{MODEL}/"}}]
        assert split["route"][0]["destination"] == {"host": HOST, "subset": "v1", "port": {"number": 8000}}
        subsets = mesh.double.stored("destinationrules", NS, NAME)["spec"]["subsets"]
        assert subsets == [{"name": "stable", "labels": {"llm-release/serving-version": "stable"}},
                           {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]
    else:
        assert split["matches"] == [{"path": {"type": "PathPrefix", "value": f"/v2/models/{MODEL}"}}]
        assert split["backendRefs"][0] == {"group": "", "kind": "Service", "name": f"{NAME}-v1", "port": 8000,
                                           "weight": 90}


def test_header_route_sends_b_to_v2_before_the_split(mesh):
    router = mesh.router()
    state = RoutingState(MODEL, {1: 90, 2: 10}, header="x-experiment", header_routes={"B": 2})

    assert router.apply(state) == state

    names = [r.get("name") for r in mesh.routes()]
    ab, split = route_name(MODEL, "ab", "B"), route_name(MODEL, "split")
    assert names.index(ab) < names.index(split)
    route = mesh.route(ab)
    if mesh.kind == "istio":
        assert route["match"] == [{"uri": {"prefix": f"/v2/models/{MODEL}/"},
                                   "headers": {"x-experiment": {"exact": "B"}}}]
        assert [d["destination"]["subset"] for d in route["route"]] == ["v2"]
    else:
        assert route["matches"][0]["headers"] == [{"type": "Exact", "name": "x-experiment", "value": "B"}]
        assert [b["name"] for b in route["backendRefs"]] == [f"{NAME}-v2"]
    assert router.get_state(MODEL) == state


@pytest.mark.parametrize("percent", [100, 25])
def test_mirror_copies_traffic_to_v2_while_v1_serves(mesh, percent):
    router = mesh.router()
    state = RoutingState(MODEL, {1: 100}, mirror_version=2, mirror_percent=percent)

    assert router.apply(state) == state

    split = mesh.route(route_name(MODEL, "split"))
    assert split_targets(mesh, split) == [(version_ref(mesh, 1), 100)]
    if mesh.kind == "istio":
        assert split["mirror"] == {"host": HOST, "subset": "v2", "port": {"number": 8000}}
        assert split["mirrorPercentage"] == {"value": float(percent)}
    else:
        mirror = {"backendRef": {"group": "", "kind": "Service", "name": f"{NAME}-v2", "port": 8000}}
        if percent != 100:  # absent means every request, on any CRD version
            mirror["percent"] = percent
        assert split["filters"] == [{"type": "RequestMirror", "requestMirror": mirror}]
    assert router.get_state(MODEL) == state


def test_blue_green_switch_moves_everything_and_back_in_one_call(mesh):
    router = mesh.router()
    router.apply(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 2},
                              mirror_version=2, mirror_percent=50))

    assert router.switch(MODEL, 2) == RoutingState(MODEL, {2: 100})
    ours = [r["name"] for r in mesh.routes() if r.get("name", "").startswith("llm-release.")]
    assert ours == [route_name(MODEL, "split")]
    assert split_targets(mesh, mesh.route(route_name(MODEL, "split"))) == [(version_ref(mesh, 2), 100)]
    if mesh.kind == "istio":  # the old version's subset stays: switching back needs no new destination
        assert "v1" in {s["name"] for s in mesh.double.stored("destinationrules", NS, NAME)["spec"]["subsets"]}

    assert router.switch(MODEL, 1) == RoutingState(MODEL, {1: 100})


def test_foreign_routes_and_other_models_stay_untouched(mesh):
    router = mesh.router()
    before = copy.deepcopy(mesh.routes())
    router.apply(RoutingState(OTHER_MODEL, {3: 100}))
    other = mesh.route(route_name(OTHER_MODEL, "split"))

    router.set_weights(MODEL, {1: 50, 2: 50})
    router.apply(RoutingState(MODEL, {1: 80, 2: 20}, header="x-experiment", header_routes={"A": 1, "B": 2}))
    router.switch(MODEL, 2)

    assert mesh.foreign() == before
    assert mesh.route(route_name(OTHER_MODEL, "split")) == other
    assert router.get_state(OTHER_MODEL) == RoutingState(OTHER_MODEL, {3: 100})
    if mesh.kind == "istio":  # ours go before the chart's catch-all, which would otherwise take everything
        assert [r.get("name") for r in mesh.routes()][-1] == "weighted"


def test_applying_the_same_state_again_writes_nothing(mesh):
    router = mesh.router()
    state = RoutingState(MODEL, {1: 90, 2: 10}, header="x-experiment", header_routes={"B": 2})
    router.apply(state)
    writes, version = mesh.writes(), mesh.stored()["metadata"]["resourceVersion"]

    assert router.apply(state) == state
    assert mesh.writes() == writes
    assert mesh.stored()["metadata"]["resourceVersion"] == version


def test_pin_routes_reach_every_version_named_and_refuse_the_same_header_for_ab(mesh):
    router = mesh.router(pin_header="x-llm-release-version")
    state = RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 2})
    router.apply(state)

    pins = [r for r in mesh.routes() if r.get("name", "").startswith(route_name(MODEL, "pin"))]
    assert [r["name"] for r in pins] == [route_name(MODEL, "pin", "v1"), route_name(MODEL, "pin", "v2")]
    if mesh.kind == "istio":
        assert pins[1]["match"][0]["headers"] == {"x-llm-release-version": {"exact": "v2"}}
    else:
        assert pins[1]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-llm-release-version", "value": "v2"}]
    assert router.get_state(MODEL) == state
    writes = mesh.writes()
    with pytest.raises(SpecError, match="pin header"):
        router.apply(RoutingState(MODEL, {1: 100}, header="x-llm-release-version", header_routes={"v2": 2}))
    assert mesh.writes() == writes


# -- concurrency ---------------------------------------------------------------------------------------
def add_foreign_route(mesh: Mesh):
    """What a person's `kubectl edit` adds between our GET and our PUT."""
    if mesh.kind == "istio":
        route = {"name": "added-by-kubectl", "match": [{"uri": {"prefix": "/debug"}}],
                 "route": [{"destination": {"host": HOST, "subset": "stable"}}]}
    else:
        route = {"name": "added-by-kubectl", "matches": [{"path": {"type": "PathPrefix", "value": "/debug"}}],
                 "backendRefs": [{"group": "", "kind": "Service", "name": f"{NAME}-stable", "port": 8000, "weight": 1}]}

    def edit(obj: dict) -> None:
        obj["spec"][mesh.routes_key].insert(0, route)
    return edit


def test_a_concurrent_edit_is_retried_and_not_lost(mesh):
    router = mesh.router()
    mesh.double.edit_between_get_and_put(mesh.plural, NAME, add_foreign_route(mesh))

    applied = router.apply(RoutingState(MODEL, {1: 90, 2: 10}))  # its first GET is the one edited after

    assert applied == RoutingState(MODEL, {1: 90, 2: 10})
    assert mesh.double.count("PUT", mesh.plural) == 2  # the first one answered 409 Conflict
    assert mesh.routes()[0]["name"] == "added-by-kubectl"
    assert router.get_state(MODEL) == applied


def test_conflicts_beyond_the_retry_limit_raise(mesh):
    router = mesh.router(conflict_retries=2)
    mesh.double.edit_between_get_and_put(mesh.plural, NAME, add_foreign_route(mesh), times=10)

    with pytest.raises(RoutingError, match=r"409 Conflict"):
        router.apply(RoutingState(MODEL, {1: 100}))
    assert mesh.double.count("PUT", mesh.plural) == 3


# -- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    pytest.param(lambda r: r.set_weights(MODEL, {1: 90, 2: 9}), id="weights-sum-to-99"),
    pytest.param(lambda r: r.set_weights(MODEL, {1: 110, 2: -10}), id="negative-weight"),
    pytest.param(lambda r: r.set_weights(MODEL, {1: 90.0, 2: 10}), id="fractional-weight"),
    pytest.param(lambda r: r.apply(RoutingState(MODEL, {1: 100}, "x-experiment", {"B": 0})),
                 id="header-route-to-version-0"),
    pytest.param(lambda r: r.apply(RoutingState(MODEL, {1: 100}, "x-experiment", {"B": "v2"})),
                 id="header-route-to-a-name"),
    pytest.param(lambda r: r.apply(RoutingState(MODEL, {1: 100}, mirror_version=1, mirror_percent=10)),
                 id="mirror-the-serving-version"),
])
def test_bad_input_raises_spec_error_and_writes_nothing(mesh, change):
    router = mesh.router()
    with pytest.raises(SpecError):
        change(router)
    assert mesh.writes() == 0


def test_a_model_name_that_makes_no_service_name_is_refused_before_any_request(double):
    mesh = Mesh("gatewayapi", double, client_for(double))
    mesh.seed()
    router = GatewayApiRouter(mesh.api_client, namespace=NS, http_route=NAME)  # default {model}-v{version}
    requests = double.count()

    with pytest.raises(SpecError, match="reference_lm-v1"):
        router.apply(RoutingState(MODEL, {1: 100}))
    assert double.count() == requests


@pytest.mark.parametrize("topology, rewritten", [("versions", f"/v2/models/{MODEL}/versions/2"),
                                                 ("model_per_release", f"/v2/models/{MODEL}_r2")])
def test_one_triton_for_all_versions_moves_whole_routes_by_rewrite_and_refuses_splits(mesh, topology, rewritten):
    shared = {"topology": topology} if mesh.kind == "istio" else {"topology": topology, "shared_service": NAME}
    router = mesh.router(**shared)
    state = RoutingState(MODEL, {2: 100}, header="x-experiment", header_routes={"A": 1})

    assert router.apply(state) == state
    split = mesh.route(route_name(MODEL, "split"))
    if mesh.kind == "istio":
        assert split["rewrite"] == {"uri": rewritten + "/"}
        assert split["route"] == [{"destination": {"host": HOST, "port": {"number": 8000}}, "weight": 100}]
    else:
        assert split["filters"] == [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": rewritten}}}]
        assert [b["name"] for b in split["backendRefs"]] == [NAME]

    writes = mesh.writes()
    with pytest.raises(SpecError, match="deployment_per_version"):
        router.set_weights(MODEL, {1: 90, 2: 10})
    with pytest.raises(SpecError, match="mirror"):
        router.apply(RoutingState(MODEL, {2: 100}, mirror_version=1, mirror_percent=100))
    assert mesh.writes() == writes


def test_the_gateway_api_rule_limit_is_the_api_servers_and_reported(double):
    mesh = Mesh("gatewayapi", double, client_for(double))
    mesh.seed()
    values = {f"user{i}": 2 for i in range(15)}  # 15 + split + the chart's 2 rules > 16
    before = mesh.routes()

    with pytest.raises(RoutingError, match="at most 16 items"):
        mesh.router().apply(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes=values))
    assert mesh.routes() == before


# -- failures ----------------------------------------------------------------------------------------------
def test_a_missing_object_is_named_with_the_fix(mesh):
    if mesh.kind == "istio":
        router = IstioRouter(mesh.api_client, namespace=NS, virtual_service="absent", host=HOST, destination_rule=NAME)
        expected = f"VirtualService {NS}/absent not found"
    else:
        router = GatewayApiRouter(mesh.api_client, namespace=NS, http_route="absent", service_template="s-v{version}")
        expected = f"HTTPRoute {NS}/absent not found"

    with pytest.raises(RoutingError, match=expected) as raised:
        router.set_weights(MODEL, {1: 100})
    assert "Helm chart" in str(raised.value)
    assert mesh.writes() == 0


def test_a_missing_destination_rule_is_named(double):
    mesh = Mesh("istio", double, client_for(double))
    mesh.seed()
    router = IstioRouter(mesh.api_client, namespace=NS, virtual_service=NAME, host=HOST, destination_rule="absent")

    with pytest.raises(RoutingError, match=f"DestinationRule {NS}/absent not found"):
        router.apply(RoutingState(MODEL, {1: 100}))
    assert mesh.writes() == 0


def test_a_wrong_token_fails_at_once_without_retries(mesh):
    router = mesh.router(api_client=client_for(mesh.double, token="expired"))
    requests = mesh.double.count()

    with pytest.raises(RoutingError, match="check the kubeconfig/service account") as raised:
        router.set_weights(MODEL, {1: 100})
    assert "401" in str(raised.value)
    assert mesh.double.count() == requests + 1


def test_rbac_without_update_fails_clearly(mesh):
    mesh.double.forbid("update", mesh.plural)
    router = mesh.router()

    with pytest.raises(RoutingError, match="HTTP 403") as raised:
        router.set_weights(MODEL, {1: 100})
    assert "service account" in str(raised.value)
    assert mesh.double.count("PUT", mesh.plural) == 1


def test_a_kubeconfig_pointing_at_the_cluster_is_enough(mesh, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": mesh.double.url}}],
        "users": [{"name": "router", "user": {"token": mesh.double.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "router", "namespace": NS}}],
    }))
    router = mesh.router(api_client=api_client_from_environment(kubeconfig=str(kubeconfig)))

    assert router.set_weights(MODEL, {2: 100}) == RoutingState(MODEL, {2: 100})


# -- the double refuses what the API server refuses ----------------------------------------------------------
def put_split(double: KubernetesApiDouble, change) -> None:
    api = CustomObjectsApi(client_for(double))
    obj = api.get_namespaced_custom_object(*GATEWAY, NS, "httproutes", NAME)
    change(obj)
    api.replace_namespaced_custom_object(*GATEWAY, NS, "httproutes", NAME, obj, field_validation="Strict")


@pytest.mark.parametrize("change, status, text", [
    (lambda o: o["spec"]["rules"][1]["backendRefs"][0].update(weight=10.5), 422, "must be of type integer"),
    (lambda o: o["spec"]["rules"][1]["backendRefs"][0].update(weight=1000001), 422, "less than or equal to 1000000"),
    (lambda o: o["spec"]["rules"][1].update(name="Not_A_DNS_Name"), 422, "should match"),
    (lambda o: o["spec"]["rules"][1].update(retry={"attempts": 2}), 400, 'unknown field \\"spec.rules[1].retry\\"'),
    (lambda o: o["metadata"].pop("resourceVersion"), 422, "must be specified for an update"),
    (lambda o: o["metadata"].update(resourceVersion="1"), 409, "the object has been modified"),
])
def test_the_double_refuses_what_the_api_server_refuses(double, change, status, text):
    CustomObjectsApi(client_for(double)).create_namespaced_custom_object(*GATEWAY, NS, "httproutes", chart_http_route())
    with pytest.raises(ApiException) as raised:
        put_split(double, change)
    assert raised.value.status == status
    assert text in raised.value.body


def test_the_double_creates_defaults_lists_and_merge_patches_like_the_api_server(double):
    api = CustomObjectsApi(client_for(double))
    created = api.create_namespaced_custom_object(*GATEWAY, NS, "httproutes", chart_http_route())
    assert created["spec"]["rules"][0]["backendRefs"][0]["weight"] == 1  # the CRD's default, applied on write

    patched = api.patch_namespaced_custom_object(*GATEWAY, NS, "httproutes", NAME,
                                                 {"metadata": {"labels": {"team": "llm"}}})
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]  # metadata only
    with pytest.raises(ApiException) as stale:
        api.patch_namespaced_custom_object(*GATEWAY, NS, "httproutes", NAME,
                                           {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}})
    assert stale.value.status == 409

    listed = api.list_namespaced_custom_object(*GATEWAY, NS, "httproutes")
    assert listed["kind"] == "HTTPRouteList"
    assert [item["metadata"]["labels"] for item in listed["items"]] == [{"team": "llm"}]


@pytest.mark.parametrize("make", [
    pytest.param(lambda c: IstioRouter(c, namespace=NS, virtual_service=NAME, host=HOST),
                 id="istio-subsets-without-rule"),
    pytest.param(lambda c: IstioRouter(c, namespace=NS, virtual_service=NAME, host=HOST, destination_rule=NAME,
                                       topology="canary"), id="unknown-topology"),
    pytest.param(lambda c: GatewayApiRouter(c, namespace=NS, http_route=NAME, topology="versions"),
                 id="shared-triton-without-its-service"),
    pytest.param(lambda c: GatewayApiRouter(c, namespace=NS, http_route=NAME, service_template="svc-{name}"),
                 id="template-without-version"),
    pytest.param(lambda c: GatewayApiRouter(c, namespace=NS, http_route=NAME, conflict_retries=-1),
                 id="negative-retries"),
])
def test_a_misconfigured_router_is_refused_when_built(double, make):
    with pytest.raises(SpecError):
        make(client_for(double))
    assert double.count() == 0


# -- forgetting a version ----------------------------------------------------------------------------------
def subsets(mesh: Mesh) -> list[str]:
    return [s["name"] for s in mesh.double.stored("destinationrules", NS, NAME)["spec"]["subsets"]]


def leave_stale_pin(mesh: Mesh, version: int) -> dict:
    """A pin route for `version` left in the object (by hand, or by an older release of the router)
    while the routing no longer names the version: put back through the API as a person would."""
    pinning = mesh.router(pin_header="x-llm-release-version")
    before = pinning.get_state(MODEL)
    pinning.apply(RoutingState(MODEL, {**before.weights}, header="x-experiment", header_routes={"S": version}))
    pin = copy.deepcopy(mesh.route(route_name(MODEL, "pin", f"v{version}")))
    pinning.apply(before)
    api = CustomObjectsApi(mesh.api_client)
    group = ISTIO if mesh.kind == "istio" else GATEWAY
    obj = api.get_namespaced_custom_object(*group, NS, mesh.plural, NAME)
    obj["spec"][mesh.routes_key].insert(0, pin)
    api.replace_namespaced_custom_object(*group, NS, mesh.plural, NAME, obj, field_validation="Strict")
    return pin


def test_forget_removes_what_is_left_of_a_version_without_traffic_and_keeps_the_rest(mesh):
    router = mesh.router()
    router.apply(RoutingState(OTHER_MODEL, {3: 100}))
    router.set_weights(MODEL, {1: 90, 2: 10})
    router.switch(MODEL, 1)
    pin = leave_stale_pin(mesh, 2)
    foreign, other = mesh.foreign(), mesh.route(route_name(OTHER_MODEL, "split"))
    assert 2 in router.known_versions(MODEL)
    if mesh.kind == "istio":
        assert subsets(mesh) == ["stable", "v3", "v1", "v2"]

    assert router.forget(MODEL, 2) == RoutingState(MODEL, {1: 100})

    assert pin["name"] not in [r.get("name") for r in mesh.routes()]
    assert router.known_versions(MODEL) == {1}
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 100})
    assert mesh.foreign() == foreign
    assert mesh.route(route_name(OTHER_MODEL, "split")) == other
    assert mesh.double.violations(mesh.plural, mesh.stored()) == []
    if mesh.kind == "istio":  # the chart's subset and the other versions' stay
        assert subsets(mesh) == ["stable", "v3", "v1"]
    assert router.switch(MODEL, 1) == RoutingState(MODEL, {1: 100})  # the remaining version still routes


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_forget_refuses_a_version_that_receives_traffic_and_writes_nothing(mesh, version):
    router = mesh.router()
    state = RoutingState(MODEL, {1: 90, 2: 10}, header="x-experiment", header_routes={"B": 3},
                         mirror_version=4, mirror_percent=50)
    router.apply(state)
    writes = mesh.writes()

    with pytest.raises(SpecError) as err:
        router.forget(MODEL, version)  # split, canary, header route, mirror
    assert err.value.field == "version"
    assert state.describe() in str(err.value)
    assert mesh.writes() == writes
    assert router.get_state(MODEL) == state


def test_forgetting_a_version_the_router_does_not_know_writes_nothing(mesh):
    router = mesh.router()
    router.apply(RoutingState(MODEL, {1: 100}))
    writes = mesh.writes()

    assert router.forget(MODEL, 7) == RoutingState(MODEL, {1: 100})
    assert router.forget("never_routed", 1) is None
    assert mesh.writes() == writes


def test_istio_keeps_a_subset_another_model_still_routes_to(double):
    mesh = Mesh("istio", double, client_for(double))
    mesh.seed()
    router = mesh.router()
    router.set_weights(MODEL, {1: 90, 2: 10})
    router.switch(MODEL, 1)
    router.apply(RoutingState(OTHER_MODEL, {2: 100}))  # subset names `v{version}` are shared by models
    writes = mesh.writes()

    assert 2 not in router.known_versions(MODEL)
    assert router.forget(MODEL, 2) == RoutingState(MODEL, {1: 100})
    assert "v2" in subsets(mesh)
    assert mesh.writes() == writes
    assert router.get_state(OTHER_MODEL) == RoutingState(OTHER_MODEL, {2: 100})


def test_istio_forget_reads_back_and_reports_a_subset_still_there(double):
    mesh = Mesh("istio", double, client_for(double))
    mesh.seed()
    router = mesh.router()
    router.set_weights(MODEL, {1: 90, 2: 10})
    router.switch(MODEL, 1)
    router._forget_destinations = lambda model, version: None  # a write that did not take

    with pytest.raises(RoutingError, match=f"DestinationRule {NS}/{NAME} still has subset v2"):
        router.forget(MODEL, 2)


# -- the command line reaches any router, through an environment ---------------------------------------------
def test_the_emergency_rollback_command_reaches_a_mesh_gateway(mesh, tmp_path, stack, loaded):
    """`llm-release rollback` on an environment whose gateway is Istio or Gateway API: readiness
    from each version's Triton (here the stack's, serving v1 and v2), routing through the API."""
    import json
    import subprocess
    import sys

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": mesh.double.url}}],
        "users": [{"name": "router", "user": {"token": mesh.double.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "router", "namespace": NS}}],
    }))
    triton = stack["components"]["triton"]["url"]
    router_settings = ({"kind": "istio", "namespace": NS, "virtual_service": NAME, "service_host": HOST,
                        "destination_rule": NAME} if mesh.kind == "istio" else
                       {"kind": "gatewayapi", "namespace": NS, "http_route": NAME,
                        "service_template": f"{NAME}-v{{version}}"})
    environments = tmp_path / "environments.json"
    environments.write_text(json.dumps([{
        "name": "production", "region": "eu", "prometheus_url": "http://127.0.0.1:9",
        "triton": {"topology": "deployment_per_version", "deployments": {"1": triton, "2": triton}},
        "router": {**router_settings, "kubeconfig": str(kubeconfig)}}]))
    mesh.router().set_weights(MODEL, {1: 50, 2: 50})

    run = subprocess.run([sys.executable, "-m", "llm_release.cli", "rollback", "--model", MODEL, "--env", "production",
                          "--to", "1", "--environments", str(environments), "--no-records", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["applied"]["weights"] == {"1": 100}
    assert mesh.router().get_state(MODEL) == RoutingState(MODEL, {1: 100})
    refused = subprocess.run([sys.executable, "-m", "llm_release.cli", "rollback", "--model", MODEL, "--env",
                              "production", "--to", "7", "--environments", str(environments), "--no-records"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "not READY" in refused.stderr  # never routed to a version that cannot serve
