"""The canary judge's gateway signals on the real stack: per-interval counts read back from
Envoy's per-version clusters through Prometheus add up to what the clients saw."""

from __future__ import annotations

import time

import pytest

from llm_release.analysis.signals import GatewaySignals
from llm_release.loadgen import send_generate_requests
from llm_release.metrics.prometheus import PrometheusClient
from llm_release.routing.envoy import EnvoyRouter
from llm_release.routing.state import RoutingState
from llm_release.stack.processes import free_port

MODEL = "reference_lm"
STEP_S = 1.0
# Envoy merges its histograms every second and Prometheus scrapes every second: after this
# long without traffic, a scrape holds everything sent before.
QUIET_S = 2.0


@pytest.fixture(scope="module")
def prom(urls):
    return PrometheusClient(urls["prometheus"])


@pytest.fixture()
def restore_routing(router, loaded):
    before = router.get_state(MODEL)
    yield
    # No route before: leave the plain split later tests' set_weights would start from.
    router.apply(before or RoutingState(MODEL, {1: 100}))


def totals(intervals, role):
    """(requests, 5xx, 4xx, latency observations) summed over intervals with data for `role`."""
    counts = [getattr(iv, role) for iv in intervals if getattr(iv, role) is not None]
    return (sum(c.requests for c in counts), sum(c.errors_5xx for c in counts), sum(c.errors_4xx for c in counts),
            sum(c.latency_ms.total for c in counts if c.latency_ms is not None))


def settled(signals: GatewaySignals, start: float, expected: dict, *, timeout_s: float = 10.0):
    """Intervals from `start` until the last whole second, read until they add up to
    `expected` (a scrape may land late) or the time is up; returns them and the sums."""
    time.sleep(QUIET_S)
    deadline = time.monotonic() + timeout_s
    while True:
        intervals = signals.intervals(start, time.time() - 0.5, STEP_S)
        got = {role: totals(intervals, role) for role in expected}
        if got == expected or time.monotonic() > deadline:
            return intervals, got
        time.sleep(0.5)


def quiet_start() -> float:
    """A window start with the gateway idle just before it, so earlier traffic stays out."""
    time.sleep(QUIET_S)
    return time.time()


def test_interval_counts_add_up_to_what_the_clients_saw_per_version(urls, prom, router, restore_routing):
    router.apply(RoutingState(MODEL, {1: 50, 2: 50}))
    start = quiet_start()
    sent = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=200, concurrency=4)
    assert sent.status_codes == {200: 200}
    v1, v2 = sent.by_version["1"], sent.by_version["2"]
    assert v1 > 0 and v2 > 0 and v1 + v2 == 200

    signals = GatewaySignals(prom, MODEL, canary=2, baseline=1)
    intervals, got = settled(signals, start, {"canary": (v2, 0, 0, v2), "baseline": (v1, 0, 0, v1)})
    assert got == {"canary": (v2, 0, 0, v2), "baseline": (v1, 0, 0, v1)}
    assert all(iv.problem is None and iv.canary is not None and iv.baseline is not None for iv in intervals)
    assert all(abs(iv.end - iv.start - STEP_S) < 1e-6 for iv in intervals)
    assert all(a.end == b.start for a, b in zip(intervals, intervals[1:]))

    # A version the gateway never routed has no cluster: no data, never zero.
    never = GatewaySignals(prom, MODEL, canary=9, baseline=1).intervals(start, intervals[-1].end, STEP_S)
    assert len(never) == len(intervals)
    assert all(iv.canary is None and f"{MODEL}_v9" in iv.problem for iv in never)
    assert totals(never, "baseline")[0] == v1


def test_mirrored_copies_count_on_the_shadow_cluster_against_the_primary(urls, prom, router, restore_routing):
    router.apply(RoutingState(MODEL, {1: 100}, mirror_version=2, mirror_percent=100))
    start = quiet_start()
    sent = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=60, concurrency=4)
    assert sent.status_codes == {200: 60} and sent.by_version == {"1": 60}

    signals = GatewaySignals(prom, MODEL, canary=2, baseline=1, shadow=True)
    _, got = settled(signals, start, {"canary": (60, 0, 0, 60), "baseline": (60, 0, 0, 60)})
    assert got == {"canary": (60, 0, 0, 60), "baseline": (60, 0, 0, 60)}


def test_error_responses_of_clusters_added_inside_the_window(stack, urls, prom):
    """Triton's 4xx for an unknown model on one version, Envoy's 503 for a backend that refuses
    connections on the other: clusters and response-class series all created mid-window."""
    model = "signals_errors"
    envoy, triton_http = stack["components"]["envoy"], ("127.0.0.1", stack["ports"]["triton_http"])
    router = EnvoyRouter(envoy["control_plane_url"], envoy["admin_url"], triton_http, topology="deployment_per_version",
                         backends={1: triton_http, 2: ("127.0.0.1", free_port())},
                         shadow_listener=("127.0.0.1", stack["ports"]["envoy_shadow"]))
    start = time.time()
    router.apply(RoutingState(model, {1: 50, 2: 50}))
    sent = send_generate_requests(f"{urls['gateway']}/v2/models/{model}/generate", count=40, concurrency=4)
    refused = sent.status_codes[503]
    unknown = sum(n for code, n in sent.status_codes.items() if code in range(400, 500))
    assert refused + unknown == 40 and refused > 0 and unknown > 0

    signals = GatewaySignals(prom, model, canary=2, baseline=1)
    # Refused connections never reach upstream (no rq_total, no latency): each counts as a request.
    expected = {"canary": (refused, refused, 0, 0), "baseline": (unknown, 0, unknown, unknown)}
    intervals, got = settled(signals, start, expected)
    assert got == expected
    assert all(iv.canary is None or iv.canary.latency_ms is None for iv in intervals)


def test_an_unreachable_prometheus_is_no_data_with_the_reason():
    url = f"http://127.0.0.1:{free_port()}"
    now = time.time()
    intervals = GatewaySignals(PrometheusClient(url, timeout_s=2), MODEL, 2, 1).intervals(now - 10, now, STEP_S)
    assert len(intervals) == 10
    assert all(iv.canary is None and iv.baseline is None for iv in intervals)
    assert all(url in iv.problem and "could not be read" in iv.problem for iv in intervals)
