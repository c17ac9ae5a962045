"""Prometheus scrapes Triton and Envoy: per-version counters come back for the model."""

from __future__ import annotations

from llm_release.loadgen import send_generate_requests
from llm_release.metrics.prometheus import PrometheusClient

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
