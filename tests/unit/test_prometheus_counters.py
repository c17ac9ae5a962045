"""Counter arithmetic: increases with resets, per-interval gateway counts, and how a failing
Prometheus reads (no stack needed: a stub client or a stub HTTP server)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llm_release.analysis.signals import GatewaySignals
from llm_release.errors import MetricsError, is_permanent
from llm_release.metrics.prometheus import PrometheusClient, Series, counter_increase


# -- counter_increase ---------------------------------------------------------------------
def pts(*values):
    return [(float(i), v) for i, v in enumerate(values)]


@pytest.mark.parametrize("values, expected", [
    ((), 0.0),
    ((7,), 0.0),
    ((10, 10, 10), 0.0),
    ((10, 15, 22), 12.0),
    ((10, 15, 3, 7), 5 + 3 + 4),  # reset: the value after it is all increase
    ((100, 2), 2.0),  # never negative, whatever the drop
    ((5, 0, 0, 4), 4.0),  # reset to exactly 0
    ((10, 12, 1, 3, 0, 6), 2 + 1 + 2 + 0 + 6),  # two resets
])
def test_counter_increase_sums_increments_and_counts_resets_from_zero(values, expected):
    assert counter_increase(pts(*values)) == expected


def test_from_zero_counts_the_first_sample_as_new():
    assert counter_increase(pts(3), from_zero=True) == 3.0
    assert counter_increase(pts(3, 5), from_zero=True) == 5.0
    assert counter_increase([], from_zero=True) == 0.0


def test_samples_are_taken_in_time_order():
    assert counter_increase([(2.0, 30.0), (0.0, 10.0), (1.0, 20.0)]) == 20.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -5.0, None])
def test_non_numbers_and_negative_samples_are_skipped(bad):
    assert counter_increase(pts(10, bad, 14)) == 4.0


def test_never_more_than_the_sampled_values_hold():
    values = (1e6, 3, 1e6 + 10, 2)
    increase = counter_increase(pts(*values))
    assert 0 <= increase <= sum(values)
    assert increase == 3 + (1e6 + 10 - 3) + 2


# -- GatewaySignals on a stub client ------------------------------------------------------
MODEL = "m"
START, STEP, N = 1000.0, 10.0, 3  # intervals [1000, 1010), [1010, 1020), [1020, 1030)
GRID = [START - STEP + j * STEP for j in range(N + 2)]  # 990 (before the window) .. 1030


class StubProm:
    """query_range answering from {promql family: [Series]}, keyed by metric name."""

    def __init__(self, series: dict[str, list[Series]] | None = None, error: Exception | None = None):
        self.series = series or {}
        self.error = error
        self.calls = []

    def query_range(self, promql, start, end, step_s):
        self.calls.append((promql, start, end, step_s))
        if self.error:
            raise self.error
        name = promql.split("{", 1)[0]
        return self.series.get(name, [])


def s(name, cluster, values, **labels):
    """A series on the grid: values[j] at GRID[j], None where it has no sample."""
    points = [(GRID[j], float(v)) for j, v in enumerate(values) if v is not None]
    return name, Series({"__name__": name, "envoy_cluster_name": cluster, **labels}, points)


def stub(*named):
    by_name: dict[str, list[Series]] = {}
    for name, series in named:
        by_name.setdefault(name, []).append(series)
    return StubProm(by_name)


TOTAL, XX = "envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx"
BUCKET = "envoy_cluster_upstream_rq_time_bucket"


def counts(intervals, role):
    out = []
    for iv in intervals:
        v = getattr(iv, role)
        out.append(None if v is None else (v.requests, v.errors_5xx, v.errors_4xx))
    return out


def test_increases_per_interval_with_a_reset_and_lazily_created_error_series():
    prom = stub(
        s(TOTAL, "m_v2", [100, 100, 110, 4, 10]),  # Envoy restarted in the 2nd interval
        s(XX, "m_v2", [None, None, None, 2, 3], envoy_response_code_class="5"),  # created after the restart
        s(TOTAL, "m_v1", [50, 60, 70, 80, 90]),
        s(XX, "m_v1", [1, 1, 2, 2, 2], envoy_response_code_class="4"),
    )
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert [(iv.start, iv.end) for iv in ivs] == [(1000, 1010), (1010, 1020), (1020, 1030)]
    # v2: 100 -> 110 (+10), 110 -> 4 (reset: +4), 4 -> 10 (+6); its 5xx series appears at 2 (+2), then +1
    assert counts(ivs, "canary") == [(10, 0, 0), (4, 2, 0), (6, 1, 0)]
    assert counts(ivs, "baseline") == [(10, 0, 1), (10, 0, 0), (10, 0, 0)]
    assert all(iv.problem is None for iv in ivs)


def test_a_cluster_without_a_request_total_is_no_data_never_zero():
    prom = stub(s(TOTAL, "m_v1", [0, 5, 9, 12, 20]))
    ivs = GatewaySignals(prom, MODEL, 9, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [None, None, None]
    assert counts(ivs, "baseline") == [(4, 0, 0), (3, 0, 0), (8, 0, 0)]
    assert all("m_v9" in iv.problem and iv.problem.startswith("canary:") for iv in ivs)


def test_a_cluster_added_inside_the_window_counts_from_zero():
    prom = stub(s(TOTAL, "m_v2", [None, None, 7, 9, 9]), s(TOTAL, "m_v1", [1, 1, 1, 1, 1]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [(7, 0, 0), (2, 0, 0), (0, 0, 0)]


def test_a_series_that_appeared_before_the_window_is_not_counted_in_it():
    # Created between the point before the window and its start: its value is older than the window.
    prom = stub(s(TOTAL, "m_v2", [None, 30, 30, 35, 35]), s(TOTAL, "m_v1", [1, 1, 1, 1, 1]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [(0, 0, 0), (5, 0, 0), (0, 0, 0)]


def test_a_gap_is_no_data_and_the_increase_comes_back_with_the_series():
    prom = stub(s(TOTAL, "m_v2", [10, 10, None, 25, 26]), s(TOTAL, "m_v1", [1, 1, 1, 1, 1]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [None, (15, 0, 0), (1, 0, 0)]
    assert ivs[0].problem.startswith("canary:") and ivs[1].problem is None


def test_errors_envoy_makes_without_an_upstream_request_count_as_requests():
    # Connection refused: Envoy answers 503 and never sends the request upstream (rq_total stays 0).
    prom = stub(s(TOTAL, "m_v2", [0, 0, 0, 0, 0]), s(XX, "m_v2", [None, None, 5, 9, 9], envoy_response_code_class="5"),
                s(TOTAL, "m_v1", [0, 0, 3, 6, 9]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [(5, 5, 0), (4, 4, 0), (0, 0, 0)]


def test_several_gateways_are_summed_per_cluster_after_their_own_resets():
    prom = stub(s(TOTAL, "m_v2", [10, 10, 20, 30, 40], instance="a"), s(TOTAL, "m_v2", [50, 50, 3, 6, 9], instance="b"),
                s(TOTAL, "m_v1", [0, 0, 0, 0, 0]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert counts(ivs, "canary") == [(10 + 3, 0, 0), (10 + 3, 0, 0), (10 + 3, 0, 0)]


def test_latency_histograms_from_bucket_increases_and_none_without_buckets():
    def bucket(le, values):
        return s(BUCKET, "m_v2", values, le=le)

    prom = stub(s(TOTAL, "m_v2", [0, 0, 4, 8, 8]), s(TOTAL, "m_v1", [0, 0, 1, 2, 3]),
                bucket("10", [None, None, 1, 3, 3]), bucket("100", [None, None, 3, 7, 7]),
                bucket("+Inf", [None, None, 4, 8, 8]))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    hist = ivs[0].canary.latency_ms
    assert hist.bounds == (10.0, 100.0, math.inf) and hist.counts == (1.0, 3.0, 4.0)
    assert ivs[1].canary.latency_ms.counts == (2.0, 4.0, 4.0)
    assert ivs[2].canary.latency_ms.total == 0.0
    assert all(iv.baseline.latency_ms is None for iv in ivs)  # requests, but no histogram: no latency data


def test_unreadable_prometheus_is_no_data_with_the_reason():
    prom = StubProm(error=MetricsError("Prometheus at http://p:9090 unreachable: refused"))
    ivs = GatewaySignals(prom, MODEL, 2, 1).intervals(START, START + N * STEP, STEP)
    assert len(ivs) == N
    assert all(iv.canary is None and iv.baseline is None for iv in ivs)
    assert all("http://p:9090 unreachable" in iv.problem for iv in ivs)


def test_one_range_query_per_family_over_the_window_and_one_step_before():
    prom = StubProm()
    signals = GatewaySignals(prom, MODEL, 2, 1, shadow=True)
    signals.intervals(START, START + N * STEP + 4, STEP)  # a partial trailing step is left out
    assert [c[0] for c in prom.calls] == list(signals.promql().values())
    assert {(c[1], c[2], c[3]) for c in prom.calls} == {(START - STEP, START + N * STEP, STEP)}
    queries = signals.promql()
    assert queries["requests"] == 'envoy_cluster_upstream_rq_total{envoy_cluster_name=~"m_v2_shadow|m_v1"}'
    assert queries["errors"] == ('envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"m_v2_shadow|m_v1",'
                                 'envoy_response_code_class=~"4|5"}')
    assert queries["latency"] == 'envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"m_v2_shadow|m_v1"}'


def test_model_names_are_escaped_in_the_cluster_regex():
    queries = GatewaySignals(StubProm(), "lm.v-2", 2, 1).promql()
    # the dot is `~` in cluster names (Envoy's statistics cut a name at its first dot); both escaped
    assert 'envoy_cluster_name=~"lm\\\\~v\\\\-2_v2|lm\\\\~v\\\\-2_v1"' in queries["requests"]


def test_less_than_a_step_is_no_interval():
    assert GatewaySignals(StubProm(), MODEL, 2, 1).intervals(START, START + STEP / 2, STEP) == []
    with pytest.raises(ValueError):
        GatewaySignals(StubProm(), MODEL, 2, 1).intervals(START, START + STEP, 0)
    with pytest.raises(ValueError):
        GatewaySignals(StubProm(), MODEL, 1, 1)


# -- a Prometheus that answers errors -----------------------------------------------------
class _Stub(BaseHTTPRequestHandler):
    status, body = 200, {}

    def do_GET(self):  # noqa: N802
        payload = json.dumps(type(self).body).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status, error_type, permanent", [
    (503, "unavailable", False), (500, "internal", False), (400, "bad_data", True), (422, "execution", True)])
def test_http_errors_carry_prometheus_error_text_and_whether_to_retry(stub_server, monkeypatch, status, error_type,
                                                                      permanent):
    server, url = stub_server
    monkeypatch.setattr(_Stub, "status", status)
    monkeypatch.setattr(_Stub, "body", {"status": "error", "errorType": error_type, "error": "the reason"})
    with pytest.raises(MetricsError) as err:
        PrometheusClient(url, timeout_s=5).query("up")
    assert url in str(err.value) and "the reason" in str(err.value) and str(status) in str(err.value)
    assert is_permanent(err.value) is permanent


def test_a_scalar_result_is_one_unlabelled_sample(stub_server, monkeypatch):
    server, url = stub_server
    monkeypatch.setattr(_Stub, "body", {"status": "success", "data": {"resultType": "scalar", "result": [1.5, "42"]}})
    assert [(x.labels, x.value) for x in PrometheusClient(url).query("scalar(up)")] == [({}, 42.0)]
