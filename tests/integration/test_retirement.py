"""Retiring a version on the live stack: refused while it has (or recently had) traffic or is
stable; otherwise gone from Envoy, unloaded from Triton and removed from the model repository,
and a second retirement is a no-op that says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from llm_release.errors import MetricsError
from llm_release.metrics.prometheus import PrometheusClient
from llm_release.model_repo import install_version, installed_versions
from llm_release.release.retirement import RetirementRefused, retire_version, traffic_in_window
from llm_release.routing.state import RoutingState
from llm_release.serving import PlainVersions
from llm_release.stack.processes import free_port

MODEL = "retire_lm"
WINDOW_S = 10.0
# Prometheus scrapes the stack's Envoy every second: after this long, a scrape holds every request.
SCRAPED_S = 2.5


@pytest.fixture(scope="module")
def prom(urls):
    return PrometheusClient(urls["prometheus"])


@pytest.fixture(scope="module")
def retire_lm(stack, engines, triton, router):
    """Versions 1-3 installed and loaded; v1 takes all traffic, v2 and v3 are known to the gateway
    (they had header routes), and v3 took a few pinned requests at the start."""
    for version in (1, 2, 3):
        install_version(engines["dir"] / f"engine{version}", stack["model_repository"], model_name=MODEL,
                        version=version)
    triton.load_versions(MODEL, [1, 2, 3])
    router.apply(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 2, "C": 3}))
    router.apply(RoutingState(MODEL, {1: 100}))
    gateway = stack["components"]["envoy"]["url"]
    for _ in range(3):
        assert pinned(gateway, 3).status_code == 200
    try:
        yield {"served": PlainVersions(triton), "repo": Path(stack["model_repository"]), "last_request": time.time()}
    finally:
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [1])


def pinned(gateway: str, version: int) -> requests.Response:
    return requests.post(f"{gateway}/v2/models/{MODEL}/versions/{version}/generate",
                         json={"text_input": "Retire me:", "max_tokens": 2}, timeout=30)


def retire(retire_lm, router, prom, version: int):
    return retire_version(MODEL, version, router=router, served=retire_lm["served"], model_repository=retire_lm["repo"],
                          prometheus=prom, window_s=WINDOW_S)


def envoy_clusters(admin_url: str) -> set[str]:
    dump = requests.get(f"{admin_url}/config_dump", params={"resource": "dynamic_active_clusters"}, timeout=10).json()
    return {c["cluster"]["name"] for c in dump.get("configs", [])}


def test_the_stable_version_is_refused_and_left_as_it_is(retire_lm, router, prom, triton):
    with pytest.raises(RetirementRefused, match=r"retire_lm v1 is the stable version \(routing: v1 100%\)") as err:
        retire(retire_lm, router, prom, 1)
    assert err.value.permanent
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 100})
    assert 1 in triton.ready_versions(MODEL)
    assert 1 in installed_versions(retire_lm["repo"], MODEL)


def test_a_version_the_routing_gives_traffic_is_refused(retire_lm, router, prom, triton):
    router.apply(RoutingState(MODEL, {1: 100}, mirror_version=2, mirror_percent=10))
    try:
        with pytest.raises(RetirementRefused, match=r"v2 still receives traffic \(routing: v1 100%; mirror 10% to v2\)"):
            retire(retire_lm, router, prom, 2)
    finally:
        router.apply(RoutingState(MODEL, {1: 100}))
    assert router.known_versions(MODEL) == {1, 2, 3}


def test_a_version_with_requests_in_the_window_is_refused_with_the_count(urls, retire_lm, router, prom, triton):
    for _ in range(4):
        assert pinned(urls["gateway"], 2).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until a scrape holds them
        try:
            if traffic_in_window(prom, MODEL, 2, window_s=WINDOW_S) >= 4:
                break
        except MetricsError:  # on a gateway nobody called before, no counter exists until that scrape
            pass
        time.sleep(0.5)
    assert traffic_in_window(prom, MODEL, 2, window_s=WINDOW_S) == 4

    with pytest.raises(RetirementRefused, match=rf"retire_lm v2 took 4 requests in the last {WINDOW_S:g} s"):
        retire(retire_lm, router, prom, 2)
    assert 2 in router.known_versions(MODEL)
    assert 2 in triton.ready_versions(MODEL)
    assert 2 in installed_versions(retire_lm["repo"], MODEL)


def test_an_idle_version_is_forgotten_unloaded_and_removed(urls, retire_lm, router, prom, triton):
    # v3's last requests were sent when the module started: let them leave the window.
    time.sleep(max(0.0, retire_lm["last_request"] + WINDOW_S + SCRAPED_S - time.time()))

    result = retire(retire_lm, router, prom, 3)

    assert result.requests_in_window == 0
    assert result.steps == [
        f"traffic: no requests in the last {WINDOW_S:g} s",
        "gateway: forgot it (routing unchanged: v1 100%)",
        "triton: unloaded (READY now: [1, 2])",
        f"model repository: removed {retire_lm['repo'] / MODEL / '3'}",
        "artifact store: kept (not asked to remove it)",
    ]
    assert not {f"{MODEL}_v3", f"{MODEL}_v3_shadow"} & envoy_clusters(urls["envoy_admin"])
    assert pinned(urls["gateway"], 3).status_code == 404
    assert triton.ready_versions(MODEL) == [1, 2]
    assert installed_versions(retire_lm["repo"], MODEL) == [1, 2]
    assert not (retire_lm["repo"] / MODEL / "3").exists()
    # The others still serve.
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 100})
    for version in (1, 2):
        assert pinned(urls["gateway"], version).json()["model_version"] == str(version)


def test_retiring_the_same_version_again_is_a_no_op_that_says_so(retire_lm, router, prom, triton):
    result = retire(retire_lm, router, prom, 3)

    assert result.steps == [
        f"traffic: no requests in the last {WINDOW_S:g} s",
        "gateway: already forgotten, skipped",
        "triton: not loaded, skipped",
        f"model repository: {retire_lm['repo'] / MODEL / '3'} already absent, skipped",
        "artifact store: kept (not asked to remove it)",
    ]
    assert triton.ready_versions(MODEL) == [1, 2]


def test_a_store_without_delete_support_keeps_the_version(retire_lm, router, prom):
    class Store:  # what every store of llm_release.artifacts.stores offers today: no deletion
        def describe(self) -> str:
            return "s3://models"

    result = retire_version(MODEL, 3, router=router, served=retire_lm["served"], model_repository=None,
                            prometheus=prom, window_s=WINDOW_S, store=Store())
    assert result.steps[-2:] == ["model repository: not given, left as is", "artifact store: kept (no delete support)"]


def test_an_unreachable_prometheus_refuses_instead_of_reading_zero(retire_lm, router, triton):
    down = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(MetricsError, match="unreachable"):
        retire(retire_lm, router, down, 2)
    assert 2 in router.known_versions(MODEL) and 2 in triton.ready_versions(MODEL)


def test_a_version_the_gateway_never_routed_took_no_requests(prom):
    assert traffic_in_window(prom, MODEL, 9, window_s=WINDOW_S) == 0
