"""The perf bench's statistics, request mix and gates, on given numbers (no server)."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from llm_release.errors import SpecError
from llm_release.perf.bench import (
    BenchResult,
    BenchTarget,
    LevelStats,
    MixEntry,
    RequestPlan,
    Sample,
    parse_mix,
    percentile,
    run_bench,
    summarize,
)
from llm_release.perf.report import DEFAULT_GATES, compare, parse_gates, write_bench_report


def test_percentile_matches_numpy_linear_interpolation():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100):
        values = list(rng.exponential(10.0, n))
        for q in (0, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 95) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_and_no_data():
    assert summarize([4.0, 1.0, 2.0, 3.0]) == {"count": 4, "mean": 2.5, "p50": 2.5, "p95": 3.85,
                                                "p99": 3.97, "max": 4.0}
    assert summarize([])["p95"] is None


def test_level_stats_from_samples():
    samples = [Sample(ok=True, ttft_ms=10, itl_ms=2, e2e_ms=40, output_tokens=16),
               Sample(ok=True, ttft_ms=30, itl_ms=None, e2e_ms=30, output_tokens=1),
               Sample(ok=False, output_tokens=3, error="boom"),
               Sample(ok=False, error="boom")]
    level = LevelStats.from_samples(2, samples, wall_s=0.5)
    assert (level.requests, level.errors, level.error_rate) == (4, 2, 0.5)
    assert level.output_tokens == 17 and level.output_tokens_per_s == 34.0  # failed requests' tokens not counted
    assert level.requests_per_s == 4.0
    assert level.ttft_ms["p50"] == 20.0 and level.itl_ms["count"] == 1
    assert level.error_samples == ["boom"]
    assert level.metric("ttft_p50_ms") == 20.0 and level.metric("error_rate") == 0.5
    with pytest.raises(KeyError):
        level.metric("ttft_count_ms")


@pytest.mark.parametrize("mix, field", [
    ([], "mix"),
    ("16,16", "mix"),
    ([(16, 0)], "mix[0].max_tokens"),
    ([(16, 8), {"prompt_tokens": 300, "max_tokens": 8}], "mix[1].prompt_tokens"),
    ([(200, 400)], "mix[0].max_tokens"),
    ([(16, 8, -1)], "mix[0].weight"),
    ([{"prompt_tokens": 8, "max_tokens": 8, "colour": 1}], "mix[0].colour"),
    ([42], "mix[0]"),
])
def test_a_bad_mix_is_refused_naming_the_item(mix, field):
    with pytest.raises(SpecError) as err:
        parse_mix(mix, max_input_len=256, max_seq_len=512)
    assert err.value.field == field


def test_the_request_plan_is_seeded_weighted_and_sized_in_tokens():
    mix = parse_mix([MixEntry(16, 4, 3), MixEntry(100, 8, 1)])
    plan = RequestPlan(mix, seed=5)
    first = [plan(i) for i in range(400)]
    assert first == [RequestPlan(mix, seed=5)(i) for i in range(400)]  # same seed, same work
    assert first != [RequestPlan(mix, seed=6)(i) for i in range(400)]
    short = sum(r.prompt_tokens == 16 for r in first)
    assert 250 <= short <= 350  # weights 3:1
    for r in first:
        assert len(r.prompt.encode()) == r.prompt_tokens  # byte-level: one token per byte
        assert r.max_tokens == (4 if r.prompt_tokens == 16 else 8)
    assert len(RequestPlan(mix, seed=5, chars_per_token=4.0)(0).prompt) == 4 * first[0].prompt_tokens


def test_bench_arguments_are_checked_before_any_request():
    target = BenchTarget("127.0.0.1:1", "m", 1, max_input_len=64, max_seq_len=128)
    for kwargs, field in (({"concurrencies": [], "requests_per_level": 1}, "concurrencies"),
                          ({"concurrencies": [1, 1], "requests_per_level": 1}, "concurrencies"),
                          ({"concurrencies": [1]}, "requests_per_level"),
                          ({"concurrencies": [1], "requests_per_level": 1, "duration_s": 1}, "requests_per_level"),
                          ({"concurrencies": [1], "duration_s": -1}, "duration_s"),
                          ({"concurrencies": [1], "requests_per_level": 1, "mix": [(100, 8)]}, "mix[0].prompt_tokens")):
        with pytest.raises(SpecError) as err:
            run_bench(target, **kwargs)
        assert err.value.field == field
    with pytest.raises(SpecError) as err:
        run_bench(BenchTarget("http://h:8001", "m", 1), concurrencies=[1], requests_per_level=1)
    assert err.value.field == "grpc_url"


# -- gates -------------------------------------------------------------------------------------

def level(c, *, ttft=100.0, itl=10.0, tps=1000.0, rps=10.0, errors=0, requests=50):
    def stat(v):
        return {"count": requests - errors, "mean": v, "p50": v, "p95": v, "p99": v, "max": v}
    return LevelStats(concurrency=c, requests=requests, errors=errors, error_rate=errors / requests, wall_s=5.0,
                      requests_per_s=rps, output_tokens=int(tps * 5), output_tokens_per_s=tps,
                      ttft_ms=stat(ttft), itl_ms=stat(itl), e2e_ms=stat(ttft + 10 * itl))


def result(label, *levels):
    return BenchResult(target={"label": label}, mix=[], seed=0, levels=list(levels))


def test_within_the_gates_passes_with_the_closest_margin_named():
    stable = result("v1", level(1), level(4, ttft=200))
    candidate = result("v2", level(1, ttft=120, tps=900), level(4, ttft=240, itl=12))
    verdict = compare(candidate, stable)
    assert verdict.passed and verdict.failed_checks == []
    assert verdict.summary.startswith("PASS") and "v2" in verdict.summary and "v1" in verdict.summary
    assert len(verdict.checks) == 2 * len(DEFAULT_GATES)


@pytest.mark.parametrize("candidate_level, failed", [
    (level(2, ttft=126), "ttft_p95_ms@c2"),  # +26% > +25%
    (level(2, itl=12.6), "itl_p95_ms@c2"),
    (level(2, tps=840), "output_tokens_per_s@c2"),  # -16% < -15%
    (level(2, errors=1, requests=50), "error_rate@c2"),  # 2% > 1%
])
def test_each_default_gate_catches_its_regression(candidate_level, failed):
    verdict = compare(result("cand", candidate_level), result("stable", level(2)))
    assert not verdict.passed and verdict.failed_checks == [failed]
    metric = failed.split("@")[0]
    assert metric.replace("_p95_ms", "") in verdict.summary or "error rate" in verdict.summary
    assert "concurrency 2" in verdict.summary


def test_gates_can_be_changed_turned_off_and_are_validated():
    stable, candidate = result("s", level(1)), result("c", level(1, ttft=140, rps=5.0))
    assert not compare(candidate, stable).passed
    assert compare(candidate, stable, {"ttft_p95_ms": 50}).passed
    assert compare(candidate, stable, {"ttft_p95_ms": None}).passed
    assert not compare(candidate, stable, {"ttft_p95_ms": None, "requests_per_s": 20}).passed
    for gates, field in (({"ttft_p42_ms": 5}, "gates.ttft_p42_ms"), ({"error_rate": 5}, "gates.error_rate"),
                         ({"output_tokens_per_s": 100}, "gates.output_tokens_per_s"),
                         ({"itl_p95_ms": -1}, "gates.itl_p95_ms"), ({"latency_slack_ms": "x"}, "gates.latency_slack_ms")):
        with pytest.raises(SpecError) as err:
            parse_gates(gates)
        assert err.value.field == field


def test_latency_slack_keeps_sub_millisecond_noise_from_failing():
    stable, candidate = result("s", level(1, itl=0.4)), result("c", level(1, itl=0.6))  # +50%, +0.2 ms
    assert compare(candidate, stable).passed
    assert not compare(candidate, stable, {"latency_slack_ms": 0}).passed


def test_missing_figures_fail_as_no_data_never_pass():
    all_failed = LevelStats.from_samples(1, [Sample(ok=False, error="down")] * 4, wall_s=1.0)
    verdict = compare(result("c", all_failed), result("s", level(1)))
    assert not verdict.passed
    statuses = {ch.metric: ch.status for ch in verdict.checks}
    assert statuses["ttft_p95_ms"] == "no_data" and statuses["error_rate"] == "fail"
    missing_level = compare(result("c", level(1), level(2)), result("s", level(1)))
    assert not missing_level.passed and all(f.endswith("@c2") for f in missing_level.failed_checks)
    assert "no stable figure" in missing_level.summary and "had no data" in missing_level.summary


def test_compare_takes_the_dicts_of_xcom_and_writes_json_and_svg(tmp_path):
    stable = result("reference_lm v1", level(1), level(2), level(4))
    candidate = result("reference_lm v2", level(1, tps=500), level(2), level(4))
    verdict = compare(json.loads(json.dumps(candidate.to_dict())), json.loads(json.dumps(stable.to_dict())))
    assert not verdict.passed and verdict.failed_checks == ["output_tokens_per_s@c1"]
    paths = write_bench_report(verdict, tmp_path / "perf")
    doc = json.loads(paths["json"].read_text())
    assert doc["passed"] is False and doc["candidate"]["levels"][0]["output_tokens_per_s"] == 500
    svg = ET.parse(paths["svg"]).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    texts = [t.text or "" for t in svg.iter(f"{ns}text")]
    assert any("FAIL" in t for t in texts) and {"c=1", "c=2", "c=4"} <= set(texts)
    assert len(list(svg.iter(f"{ns}polyline"))) == 8  # 4 panels x (candidate, stable)
    rings = [c for c in svg.iter(f"{ns}circle") if c.get("stroke") == "#c0392b"]
    assert len(rings) == 2  # the failed check, and the legend's example


def test_an_unreachable_server_is_counted_as_errors_with_the_reason():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bench = run_bench(BenchTarget(f"127.0.0.1:{port}", "m", 1), concurrencies=[1, 2], requests_per_level=3,
                      mix=[(8, 2)], timeout_s=10)
    for lv in bench.levels:
        assert (lv.requests, lv.errors, lv.output_tokens) == (3, 3, 0)
        assert "UNAVAILABLE" in lv.error_samples[0] or "onnect" in lv.error_samples[0]
