"""Real Triton + real Envoy: load beside without a failed request, canary, A/B, shadow, blue-green."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests

from llm_release.loadgen import send_generate_requests
from llm_release.routing.state import RoutingState
from llm_release.stats import binomial_interval

MODEL = "reference_lm"


def triton_success(metrics_url: str) -> dict[str, float]:
    """version -> nv_inference_request_success, read straight from Triton (no scrape delay)."""
    text = requests.get(metrics_url, timeout=10).text
    found = re.findall(rf'^nv_inference_request_success\{{model="{MODEL}",version="(\d+)"\}} (\S+)$', text, re.M)
    return {v: float(n) for v, n in found}


@pytest.fixture()
def metrics_url(stack):
    return stack["components"]["triton"]["metrics_url"]


@pytest.fixture()
def gen_url(urls):
    return f"{urls['gateway']}/v2/models/{MODEL}/generate"


def test_loading_v2_beside_v1_fails_no_request(triton, loaded, router, gen_url):
    router.apply(RoutingState(MODEL, {1: 100}))
    triton.load_versions(MODEL, [1])
    stop = threading.Event()
    results = []

    def client():
        session = requests.Session()
        while not stop.is_set():
            resp = session.post(gen_url, json={"text_input": "steady", "max_tokens": 2}, timeout=30)
            results.append((resp.status_code, resp.json().get("model_version") if resp.ok else resp.text))

    workers = [threading.Thread(target=client) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        while len(results) < 10:  # traffic is flowing before the load starts...
            time.sleep(0.01)
        during = len(results)
        assert triton.load_versions(MODEL, [1, 2]) == [1, 2]
        while len(results) < during + 10:  # ...and keeps flowing after it
            time.sleep(0.01)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert len(results) >= 20
    assert [r for r in results if r[0] != 200] == []
    assert {r[1] for r in results} == {"1"}


def test_ten_percent_canary_over_4000_requests(loaded, router, gen_url):
    router.apply(RoutingState(MODEL, {1: 90, 2: 10}))
    n = 4000
    result = send_generate_requests(gen_url, count=n, concurrency=6, max_tokens=1)
    assert result.errors == 0
    lo, hi = binomial_interval(n, 0.10, 0.99)
    assert lo <= result.by_version["2"] <= hi, (result.by_version, lo, hi)


def test_header_b_always_reaches_v2_and_a_v1(loaded, router, gen_url):
    state = router.apply(RoutingState(MODEL, {1: 90, 2: 10}, header="x-experiment", header_routes={"A": 1, "B": 2}))
    assert router.get_state(MODEL) == state
    b = send_generate_requests(gen_url, count=150, concurrency=4, headers={"x-experiment": "B"})
    a = send_generate_requests(gen_url, count=150, concurrency=4, headers={"x-experiment": "A"})
    assert dict(b.by_version) == {"2": 150} and dict(a.by_version) == {"1": 150}


def test_shadow_100_percent_answers_from_v1_while_v2_receives_every_copy(loaded, router, gen_url, metrics_url):
    router.apply(RoutingState(MODEL, {1: 100}, mirror_version=2, mirror_percent=100))
    before = triton_success(metrics_url)
    result = send_generate_requests(gen_url, count=200, concurrency=4)
    assert result.errors == 0 and dict(result.by_version) == {"1": 200}

    def mirrored():
        after = triton_success(metrics_url)
        return after.get("2", 0) - before.get("2", 0)

    deadline = time.monotonic() + 10
    while mirrored() < 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # copies are sent asynchronously
    assert mirrored() == 200


def test_blue_green_switch_sends_nothing_to_the_old_version_and_keeps_it_hot(triton, loaded, router, gen_url,
                                                                             metrics_url):
    router.apply(RoutingState(MODEL, {1: 100}))
    state = router.switch(MODEL, 2)
    assert state == RoutingState(MODEL, {2: 100})
    before = triton_success(metrics_url)
    result = send_generate_requests(gen_url, count=300, concurrency=4)
    after = triton_success(metrics_url)
    assert dict(result.by_version) == {"2": 300}
    assert after.get("1", 0) == before.get("1", 0)
    assert triton.ready_versions(MODEL) == [1, 2]  # the old version stays loaded: switching back is instant
    router.switch(MODEL, 1)


def test_a_version_ready_in_triton_that_fails_inference_gets_no_traffic(stack, triton, engines, router, urls):
    """READY is not enough: a version whose every answer is an error is refused before the
    gateway changes, and no request reaches it."""
    from llm_release.engine.faults import Faults, install_faulty_version
    from llm_release.errors import TritonError
    from llm_release.model_repo import install_version
    from llm_release.routing.envoy import cluster_name
    from llm_release.routing.shift import shift_traffic

    model = "failing_lm"  # a name no other module uses (the stack's repository is shared)
    install_version(engines["dir"] / "engine1", stack["model_repository"], model_name=model, version=1)
    install_faulty_version(engines["dir"] / "engine2", stack["model_repository"], Faults(error_rate=1.0),
                           model_name=model, version=2)
    triton.load_versions(model, [1, 2])
    try:
        assert triton.ready_versions(model) == [1, 2]  # Triton calls both READY
        before = router.apply(RoutingState(model, {1: 100}))
        with pytest.raises(TritonError):
            shift_traffic(router, RoutingState(model, {1: 90, 2: 10}), triton=triton)
        assert router.get_state(model) == before  # the gateway never changed
        sent = send_generate_requests(f"{urls['gateway']}/v2/models/{model}/generate", count=40, concurrency=4)
        assert sent.errors == 0 and set(sent.by_version) == {"1"}
        stats = requests.get(f"{urls['envoy_admin']}/stats", timeout=5,
                             params={"filter": rf"^cluster\.{cluster_name(model, 2)}\.upstream_rq_total$"}).text
        assert stats.strip() == "" or stats.strip().endswith(": 0"), stats  # no cluster, or one never used
    finally:
        triton.unload_versions(model, triton.ready_versions(model))
