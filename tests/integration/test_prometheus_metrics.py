"""Prometheus scrapes Triton and Envoy: per-version counters come back for the model; the client's
range queries, NaN as no data, and its errors."""

from __future__ import annotations

import time

import pytest

from llm_release.errors import MetricsError, is_permanent
from llm_release.loadgen import send_generate_requests
from llm_release.metrics.prometheus import PrometheusClient, counter_increase
from llm_release.stack.processes import free_port

MODEL = "reference_lm"


def test_prometheus_returns_request_success_per_model_version(urls, loaded, router):
    prom = PrometheusClient(urls["prometheus"])
    query = f'nv_inference_request_success{{model="{MODEL}"}}'
    before = prom.values_by(query, "version")
    router.set_weights(MODEL, {1: 50, 2: 50})
    sent = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=200, concurrency=4)
    assert sent.errors == 0

    def caught_up(samples):
        now = {s.labels["version"]: s.value for s in samples}
        return all(now.get(v, 0) - before.get(v, 0) >= n for v, n in sent.by_version.items())

    samples = prom.wait_for(query, caught_up, timeout_s=30)
    versions = {s.labels["version"] for s in samples}
    assert {"1", "2"} <= versions
    assert all(s.labels["model"] == MODEL for s in samples)


def test_gateway_counts_responses_per_version_cluster(urls, loaded, router):
    prom = PrometheusClient(urls["prometheus"])
    router.set_weights(MODEL, {1: 100})
    send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=20, concurrency=2)
    query = (f'envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{MODEL}_v1",'
             f'envoy_response_code_class="2"}}')
    samples = prom.wait_for(query, lambda s: bool(s) and s[0].value >= 20, timeout_s=30)
    assert samples[0].value >= 20


def test_no_data_is_empty_not_zero(urls):
    prom = PrometheusClient(urls["prometheus"])
    assert prom.query('nv_inference_request_success{model="no_such_model"}') == []


def test_nan_is_no_data(urls):
    prom = PrometheusClient(urls["prometheus"])
    prom.wait_for('up{job="envoy"}', bool, timeout_s=30)  # the gateway has been scraped
    assert prom.query('up{job="envoy"} * 0 / 0') == []  # a series whose value is NaN: no data
    assert prom.query("0 / 0") == []  # a NaN scalar too
    assert prom.values_by('up{job="envoy"} * 0 / 0', "job") == {}
    now = time.time()
    assert prom.query_range('up{job="envoy"} * 0 / 0', now - 5, now, 1) == []


def test_a_scalar_result_keeps_its_value(urls):
    prom = PrometheusClient(urls["prometheus"])
    before = time.time()
    (sample,) = prom.query("time()")
    assert sample.labels == {} and before - 5 < sample.value < time.time() + 5


def test_a_dotted_models_versions_are_counted_under_their_own_cluster_names(urls, router):
    """Envoy tags cluster series with the name up to its first dot: the judge's queries must
    still find both versions of `dotted.lm-1.0`, not a series for `dotted`."""
    from llm_release.analysis.signals import GatewaySignals
    from llm_release.routing.envoy import cluster_name
    from llm_release.routing.state import RoutingState

    model = "dotted.lm-1.0"
    router.apply(RoutingState(model, {1: 50, 2: 50}))
    try:
        prom = PrometheusClient(urls["prometheus"])
        query = GatewaySignals(prom, model, canary=2, baseline=1).promql()["requests"]
        samples = prom.wait_for(query, lambda found: len(found) == 2, timeout_s=30)
        assert {s.labels["envoy_cluster_name"] for s in samples} == {cluster_name(model, 1), cluster_name(model, 2)}
        assert not prom.query('envoy_cluster_upstream_rq_total{envoy_cluster_name="dotted"}')
    finally:
        router.apply(RoutingState(model, {1: 100}))
        router.forget(model, 2)


def test_range_query_returns_points_on_the_step_grid(urls, loaded, router):
    prom = PrometheusClient(urls["prometheus"])
    router.set_weights(MODEL, {1: 100})
    send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=10, concurrency=2)
    prom.wait_for(f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{MODEL}_v1"}}', bool, timeout_s=30)
    end = round(time.time(), 3)
    start = round(end - 4.5, 3)
    (up,) = prom.query_range('up{job="envoy"}', start, end, 0.5)
    assert up.labels["job"] == "envoy"
    offsets = [round(t - start, 3) for t, _ in up.points]  # start and end kept to the millisecond
    assert offsets and set(offsets) <= {k * 0.5 for k in range(10)} and offsets[-1] == 4.5
    assert offsets == sorted(offsets) and {v for _, v in up.points} == {1.0}
    (clock,) = prom.query_range("time()", start, end, 1.5)
    assert [v for _, v in clock.points] == [t for t, _ in clock.points]
    (total,) = prom.query_range(f'envoy_cluster_upstream_rq_total{{envoy_cluster_name="{MODEL}_v1"}}',
                                end - 60, end, 1)
    assert 0 <= counter_increase(total.points) <= total.points[-1][1]
    assert prom.query_range(f'nv_inference_request_success{{model="no_such_model"}}', start, end, 1) == []


def test_an_unreachable_prometheus_is_a_transient_metrics_error_naming_it():
    url = f"http://127.0.0.1:{free_port()}"
    prom = PrometheusClient(url, timeout_s=2)
    assert prom.is_online() is False
    for call in (lambda: prom.query("up"), lambda: prom.query_range("up", time.time() - 10, time.time(), 1)):
        with pytest.raises(MetricsError) as err:
            call()
        assert url in str(err.value) and "refused" in str(err.value)
        assert is_permanent(err.value) is False


def test_a_bad_query_is_a_permanent_metrics_error_with_prometheus_reason(urls):
    prom = PrometheusClient(urls["prometheus"])
    with pytest.raises(MetricsError) as err:
        prom.query("rate(up)")
    assert "expected type range vector" in str(err.value) and urls["prometheus"] in str(err.value)
    assert is_permanent(err.value) is True
    with pytest.raises(MetricsError) as err:
        prom.query_range("up{", time.time() - 10, time.time(), 1)
    assert "parse error" in str(err.value)
