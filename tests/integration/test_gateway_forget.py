"""Envoy forgets a version: its clusters and pinned route go, its pinned paths stop at the gateway,
the other versions keep serving, and a version that still has traffic is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from llm_release.errors import SpecError
from llm_release.loadgen import send_generate_requests
from llm_release.model_repo import install_version
from llm_release.routing.state import RoutingState

MODEL = "forget_lm"


@pytest.fixture(scope="module")
def forget_lm(stack, engines, triton):
    """Versions 1, 2 and 3 of a model of this module's own, loaded; unloaded at the end."""
    for version in (1, 2, 3):
        install_version(engines["dir"] / f"engine{version}", stack["model_repository"], model_name=MODEL,
                        version=version)
    triton.load_versions(MODEL, [1, 2, 3])
    try:
        yield [1, 2, 3]
    finally:
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [1])


def pinned(url: str, version: int, endpoint: str = "generate") -> requests.Response:
    return requests.post(f"{url}/v2/models/{MODEL}/versions/{version}/{endpoint}",
                         json={"text_input": "Forget me:", "max_tokens": 2}, timeout=30)


def dumped_clusters(admin_url: str) -> set[str]:
    dump = requests.get(f"{admin_url}/config_dump", params={"resource": "dynamic_active_clusters"}, timeout=10).json()
    return {c["cluster"]["name"] for c in dump.get("configs", [])}


def generation(stack) -> str:
    """The version of the model's scope in the control plane's store (changes with every write)."""
    resp = requests.get(f"{stack['components']['xds']['url']}/v1/resources/envoy.config.route.v3.ScopedRouteConfiguration/"
                        f"models%2F{MODEL}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["version"]


def test_a_forgotten_version_is_gone_from_envoy_and_the_others_still_serve(stack, urls, router, forget_lm):
    # v3 had a header route once: it keeps its clusters and pinned route after the route is gone.
    router.apply(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 3}))
    state = router.apply(RoutingState(MODEL, {1: 90, 2: 10}))
    assert pinned(urls["gateway"], 3).json()["model_version"] == "3"
    assert f"{MODEL}_v3" in dumped_clusters(urls["envoy_admin"])
    assert router.known_versions(MODEL) == {1, 2, 3}

    assert router.forget(MODEL, 3) == state

    clusters = dumped_clusters(urls["envoy_admin"])
    assert not {f"{MODEL}_v3", f"{MODEL}_v3_shadow"} & clusters
    assert {f"{MODEL}_v1", f"{MODEL}_v2"} <= clusters
    assert not {c for c in clusters if c.startswith(MODEL) and c.endswith("_shadow")}  # no mirror, no shadow
    assert router.known_versions(MODEL) == {1, 2}
    assert router.get_state(MODEL) == state
    # The gateway answers for v3 itself: the request no longer reaches Triton, which still serves v3.
    for endpoint in ("generate", "infer", "ready"):
        refused = pinned(urls["gateway"], 3, endpoint)
        assert refused.status_code == 404
        assert "not routed by the gateway" in refused.text
    assert pinned(urls["triton"], 3).json()["model_version"] == "3"
    for version in (1, 2):
        assert pinned(urls["gateway"], version).json()["model_version"] == str(version)
    split = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=40, concurrency=4)
    assert split.errors == 0 and set(split.by_version) <= {"1", "2"}


def test_forgetting_again_or_a_version_never_routed_changes_nothing(stack, router, forget_lm):
    state = router.apply(RoutingState(MODEL, {1: 100}))
    router.forget(MODEL, 3)
    before = generation(stack)

    assert router.forget(MODEL, 3) == state
    assert router.forget(MODEL, 42) == state
    assert router.forget("never_routed_lm", 1) is None
    assert generation(stack) == before  # nothing was written


def test_routing_a_forgotten_version_again_brings_it_back(urls, router, forget_lm):
    router.apply(RoutingState(MODEL, {1: 100}))
    router.forget(MODEL, 3)
    assert pinned(urls["gateway"], 3).status_code == 404

    state = RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"C": 3})
    assert router.apply(state) == state
    assert pinned(urls["gateway"], 3).json()["model_version"] == "3"
    ab = requests.post(f"{urls['gateway']}/v2/models/{MODEL}/generate", json={"text_input": "x", "max_tokens": 1},
                       headers={"x-experiment": "C"}, timeout=30)
    assert ab.json()["model_version"] == "3"
    router.apply(RoutingState(MODEL, {1: 100}))


@pytest.mark.parametrize("state", [
    pytest.param(RoutingState(MODEL, {1: 80, 3: 20}), id="weight"),
    pytest.param(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 3}), id="header-route"),
    pytest.param(RoutingState(MODEL, {1: 100}, mirror_version=3, mirror_percent=25), id="mirror"),
])
def test_a_version_with_traffic_is_refused_naming_the_routing(stack, urls, router, forget_lm, state):
    router.apply(state)
    before = generation(stack)

    with pytest.raises(SpecError) as err:
        router.forget(MODEL, 3)
    assert err.value.field == "version"
    assert state.describe() in str(err.value)
    assert generation(stack) == before
    assert f"{MODEL}_v3" in dumped_clusters(urls["envoy_admin"])
    assert pinned(urls["gateway"], 3).json()["model_version"] == "3"
    router.apply(RoutingState(MODEL, {1: 100}))
