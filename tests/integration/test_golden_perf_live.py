"""Golden prompts and the perf bench on the session's real stack (Triton + Envoy, reference engines).

v1 (fp32, seed 1) and v2 (fp16, seed 2) are loaded side by side by the `loaded` fixture; every
request here is pinned to one version. Loads are kept small: this machine has two cores.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from llm_release.model_repo import install_version
from llm_release.perf.bench import BenchTarget, bench_pair, run_bench
from llm_release.perf.report import compare, write_bench_report
from llm_release.quality.golden import (
    default_suite_path,
    load_suite,
    model_per_release,
    parse_suite,
    pinned_generator,
    run_suite,
    write_report,
)
from tests.conftest import MODEL

pytestmark = pytest.mark.stack

SMALL_MIX = [(16, 12, 2), (64, 20, 1)]
RELEASES_MODEL = "golden_lm"  # model-per-release topology: golden_lm_r1, golden_lm_r2


@pytest.fixture(scope="module")
def shipped_suite():
    return load_suite(default_suite_path(MODEL))


def test_the_shipped_suite_passes_v2_against_v1_through_the_gateways_pinned_path(loaded, urls, shipped_suite,
                                                                               tmp_path):
    report = run_suite(shipped_suite, pinned_generator(urls["gateway"], MODEL, 2),
                       pinned_generator(urls["gateway"], MODEL, 1),
                       candidate_label=f"{MODEL} v2", stable_label=f"{MODEL} v1")
    assert report.passed, report.summary
    assert report.regression.enabled and report.regression.compared == report.total
    assert all(c.answer and c.error is None for c in report.cases)
    json_path, md_path = write_report(report, tmp_path / "golden.json")
    assert json.loads(json_path.read_text())["passed"] is True
    assert md_path.read_text().startswith(f"# Golden suite {MODEL}: PASS")


def test_the_shipped_suite_passes_on_the_model_per_release_topology(stack, engines, triton, urls, shipped_suite):
    names = [f"{RELEASES_MODEL}_r{n}" for n in (1, 2)]
    for n, name in zip((1, 2), names):
        install_version(engines["dir"] / f"engine{n}", stack["model_repository"], model_name=name, version=1)
        triton.load_versions(name, [1])
    try:
        releases = model_per_release()
        report = run_suite(shipped_suite, pinned_generator(urls["triton"], RELEASES_MODEL, 2, triton_model=releases),
                           pinned_generator(urls["triton"], RELEASES_MODEL, 1, triton_model=releases))
        assert report.passed, report.summary
    finally:
        for name in names:
            triton.unload_versions(name, [1])


def test_an_expectation_the_model_does_not_meet_fails_and_the_report_names_the_case(loaded, urls, shipped_suite,
                                                                                 tmp_path):
    doc = {"suite": "unmet", "pass_rate": 1.0,
           "cases": [{"id": "still-fine", "prompt": shipped_suite.cases[0].prompt,
                      "expect": {"exact": shipped_suite.cases[0].expect.value}, "max_tokens": 12},
                     {"id": "knows-geography", "prompt": "The capital of France is", "max_tokens": 12,
                      "expect": {"contains": "Paris"}},
                     {"id": "writes-json", "prompt": '{"verdict": "', "max_tokens": 12,
                      "expect": {"json": {"required_keys": ["verdict"]}}}]}
    report = run_suite(parse_suite(doc), pinned_generator(urls["triton"], MODEL, 1))
    assert not report.passed and report.failed_ids == ["knows-geography", "writes-json"]
    assert "knows-geography" in report.summary and "writes-json" in report.summary
    assert "does not contain 'Paris'" in report.cases[1].why and "not valid JSON" in report.cases[2].why
    _, md_path = write_report(report, tmp_path / "unmet.json")
    assert "| knows-geography |" in md_path.read_text()


def test_a_version_that_does_not_exist_fails_every_case_with_the_error(loaded, urls, shipped_suite):
    report = run_suite(shipped_suite, pinned_generator(urls["triton"], MODEL, 99),
                       pinned_generator(urls["triton"], MODEL, 1))
    assert not report.passed and report.passed_count == 0
    assert report.failed_ids == [c.id for c in shipped_suite.cases]
    assert all("HTTP 404" in c.error and "version 99" in c.error for c in report.cases)
    assert all(c.changed for c in report.cases)  # stable answered, the candidate did not


def _target(stack, engines, version, **kw):
    meta = engines["metadata"][1]
    return BenchTarget(stack["components"]["triton"]["grpc_url"], MODEL, version, label=f"{MODEL} v{version}",
                       max_input_len=meta.max_input_len, max_seq_len=meta.max_seq_len, **kw)


def test_the_bench_measures_v2_against_v1_and_writes_json_and_svg(stack, engines, loaded, tmp_path):
    requests = 6
    candidate, stable = bench_pair(_target(stack, engines, 2), _target(stack, engines, 1), concurrencies=[1, 2],
                                   requests_per_level=requests, mix=SMALL_MIX, seed=11)
    # The reference model has no end token: every request streams exactly max_tokens tokens,
    # one gRPC response each, so the count is known in advance from the seeded plan.
    from llm_release.perf.bench import RequestPlan, parse_mix
    plan = RequestPlan(parse_mix(SMALL_MIX), 11)
    expected_tokens = sum(plan(i).max_tokens for i in range(requests))
    for bench in (candidate, stable):
        assert [lv.concurrency for lv in bench.levels] == [1, 2]
        for lv in bench.levels:
            assert lv.errors == 0, lv.error_samples
            assert lv.requests == requests and lv.output_tokens == expected_tokens
            assert 0 < lv.ttft_ms["p50"] <= lv.ttft_ms["p95"] <= lv.e2e_ms["max"]
            assert lv.itl_ms["count"] == requests and lv.output_tokens_per_s > 0
    verdict = compare(candidate, stable)
    assert len(verdict.checks) == 2 * 4 and verdict.summary.startswith("PASS" if verdict.passed else "FAIL")
    paths = write_bench_report(verdict, tmp_path / "perf")
    doc = json.loads(paths["json"].read_text())
    assert doc["candidate"]["target"]["version"] == 2 and doc["stable"]["target"]["version"] == 1
    svg = ET.parse(paths["svg"]).getroot()
    assert svg.tag.endswith("svg") and len(svg.findall("{http://www.w3.org/2000/svg}g")) == 4


def test_the_bench_counts_a_missing_version_as_errors_not_a_crash(stack, engines, loaded):
    missing = run_bench(_target(stack, engines, 99), concurrencies=[1], requests_per_level=3, mix=SMALL_MIX)
    level = missing.levels[0]
    assert level.requests == 3 and level.errors == 3 and level.output_tokens == 0
    assert "version 99 is not found" in level.error_samples[0]
    good = run_bench(_target(stack, engines, 1), concurrencies=[1], requests_per_level=3, mix=SMALL_MIX)
    verdict = compare(missing, good)
    assert not verdict.passed and "error_rate@c1" in verdict.failed_checks
    statuses = {ch.metric: ch.status for ch in verdict.checks}
    assert statuses == {"ttft_p95_ms": "no_data", "itl_p95_ms": "no_data", "output_tokens_per_s": "fail",
                        "error_rate": "fail"}


def test_the_bench_counts_server_errors_and_timeouts_and_runs_for_a_duration(stack, engines, triton, loaded):
    from llm_release.engine.faults import Faults, install_faulty_version

    model = "bench_faulty_lm"
    install_faulty_version(engines["dir"] / "engine1", stack["model_repository"], Faults(error_rate=0.5, seed=3),
                           model_name=model, version=1)
    install_faulty_version(engines["dir"] / "engine1", stack["model_repository"], Faults(added_latency_ms=1500),
                           model_name=model, version=2)
    triton.load_versions(model, [1, 2])
    try:
        grpc_url = stack["components"]["triton"]["grpc_url"]
        flaky = run_bench(BenchTarget(grpc_url, model, 1), concurrencies=[1], requests_per_level=12, mix=SMALL_MIX)
        lv = flaky.levels[0]
        assert lv.requests == 12 and 0 < lv.errors < 12 and lv.ttft_ms["count"] == 12 - lv.errors
        slow = run_bench(BenchTarget(grpc_url, model, 2), concurrencies=[1], requests_per_level=1, mix=SMALL_MIX,
                         timeout_s=0.5)
        assert slow.levels[0].errors == 1 and slow.levels[0].error_samples[0].startswith("timed out after 0.5 s")
        timed = run_bench(_target(stack, engines, 1), concurrencies=[2], duration_s=0.5, mix=SMALL_MIX)
        assert timed.levels[0].requests > 0 and timed.levels[0].errors == 0 and timed.levels[0].wall_s >= 0.5
    finally:
        triton.unload_versions(model, [1, 2])
