"""The canary judge on simulated counts: no data, small samples, equal versions, real faults."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_release.analysis.config import JudgeConfig
from llm_release.analysis.judge import CanaryJudge, judge_intervals
from llm_release.analysis.samples import Health, Histogram, Interval, ProbeResult, VersionCounts
from llm_release.analysis.simulate import ENVOY_BOUNDS_MS, SIMULATION_DISABLED, Scenario, VersionTruth
from llm_release.analysis.verdict import Outcome, Verdict
from llm_release.errors import SpecError

CONFIG = {"disabled": dict(SIMULATION_DISABLED)}
STABLE = VersionTruth(600, error_5xx=0.01)
T0 = 1_800_000_000.0


def run(scenario: Scenario, *, seconds=1800, seed=7, config=CONFIG, stop_at_final=True):
    judge = CanaryJudge(config)
    verdict = None
    for iv in scenario.intervals(np.random.default_rng(seed), seconds=seconds, start=T0):
        verdict = judge.observe(iv)
        if stop_at_final and verdict.final:
            break
    return verdict


def counts(n, e5=0, e4=0, latency_ms=100.0):
    hist = Histogram.from_values([latency_ms] * int(n), ENVOY_BOUNDS_MS)
    return VersionCounts(n, e5, e4, hist)


def test_no_data_is_inconclusive_never_pass():
    verdict = judge_intervals([Interval(T0, T0 + 10, None, None, problem="Prometheus unreachable")], CONFIG)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "Prometheus unreachable" in verdict.reason


def test_one_sample_is_inconclusive():
    verdict = judge_intervals([Interval(T0, T0 + 10, counts(1), counts(100), health=Health(ready=True))], CONFIG)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert verdict.check("compare_5xx").outcome is Outcome.INCONCLUSIVE


def test_no_traffic_to_the_canary_is_inconclusive():
    intervals = [Interval(T0 + 10 * i, T0 + 10 * (i + 1), counts(0), counts(500), health=Health(ready=True))
                 for i in range(60)]
    verdict = judge_intervals(intervals, CONFIG)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "no traffic reached the canary" in verdict.reason


def test_equal_versions_pass_with_their_numbers():
    verdict = run(Scenario(VersionTruth(60, 0.01), STABLE))
    assert verdict.outcome is Outcome.PASS, verdict.table()
    check = verdict.check("compare_5xx")
    assert check.outcome is Outcome.PASS
    assert check.numbers["canary_samples"] >= 100
    assert check.numbers["log_likelihood_ratio"] < 0  # a PASS holds while the evidence leans to "good"
    assert verdict.check("gpu_headroom").outcome is Outcome.DISABLED
    assert "no GPU" in verdict.check("gpu_headroom").reason


def test_gross_fault_fails_within_seconds():
    # 30% 5xx at 5 canary requests a second against a clean baseline.
    scenario = Scenario(VersionTruth(300, 0.30), VersionTruth(300, 0.0), interval_s=1.0)
    verdict = run(scenario, seconds=60)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.seconds <= 6, verdict.table()
    assert verdict.check("compare_5xx").outcome is Outcome.FAIL


def test_refusals_the_baseline_answers_are_a_regression():
    verdict = run(Scenario(VersionTruth(600, 0.0, error_4xx=0.2), VersionTruth(600, 0.0, error_4xx=0.001)))
    assert verdict.outcome is Outcome.FAIL
    assert verdict.check("compare_4xx").outcome is Outcome.FAIL


def test_five_times_slower_fails_on_latency():
    slow = VersionTruth(600, 0.0, latency_median_ms=1000)
    verdict = run(Scenario(slow, VersionTruth(600, 0.0, latency_median_ms=200)))
    assert verdict.outcome is Outcome.FAIL
    failed = {c.name for c in verdict.checks if c.outcome is Outcome.FAIL}
    assert failed & {"compare_latency_p50", "compare_latency_p95"}


def test_a_fault_in_the_middle_of_a_step_is_caught_not_averaged_away():
    scenario = Scenario(VersionTruth(600, 0.01), VersionTruth(600, 0.01), faulty_canary=VersionTruth(600, 0.10),
                        onset_s=900, interval_s=10)
    judge = CanaryJudge(CONFIG)
    outcomes = []
    for iv in scenario.intervals(np.random.default_rng(3), seconds=1800, start=T0):
        outcomes.append((iv.start - T0, judge.observe(iv).outcome))
    before = [o for t, o in outcomes if t < 900]
    after = [(t, o) for t, o in outcomes if t >= 900]
    assert Outcome.PASS in before and Outcome.FAIL not in before
    failed_at = next(t for t, o in after if o is Outcome.FAIL)
    assert failed_at - 900 <= 300
    assert outcomes[-1][1] is Outcome.FAIL  # final for the step


def test_missing_data_after_a_pass_is_inconclusive_then_recovers():
    judge = CanaryJudge(CONFIG)
    good = Scenario(VersionTruth(600, 0.0), VersionTruth(600, 0.0))
    rng = np.random.default_rng(5)
    verdict = None
    for iv in good.intervals(rng, seconds=1200, start=T0):
        verdict = judge.observe(iv)
    assert verdict.outcome is Outcome.PASS
    end = verdict.at
    down = judge.observe(Interval(end, end + 10, None, None, problem="Prometheus at http://x unreachable"))
    assert down.outcome is Outcome.INCONCLUSIVE and "unreachable" in down.reason
    for iv in good.intervals(rng, seconds=30, start=end + 10):
        verdict = judge.observe(iv)
    assert verdict.outcome is Outcome.PASS


def test_fail_is_final_for_the_step():
    judge = CanaryJudge(CONFIG)
    bad = Scenario(VersionTruth(600, 0.5), VersionTruth(600, 0.0))
    verdict = None
    for iv in bad.intervals(np.random.default_rng(1), seconds=60, start=T0):
        verdict = judge.observe(iv)
    assert verdict.outcome is Outcome.FAIL
    for iv in Scenario(VersionTruth(600, 0.0), VersionTruth(600, 0.0)).intervals(
            np.random.default_rng(2), seconds=600, start=verdict.at):
        later = judge.observe(iv)
    assert later.outcome is Outcome.FAIL and later.decided_at == verdict.decided_at


def test_good_canaries_are_rarely_rolled_back():
    """Error control: 60 good canaries at 10% weight; the judge's false-rollback chance is <= 1%."""
    false = 0
    for seed in range(60):
        verdict = run(Scenario(VersionTruth(600, 0.01), VersionTruth(5400, 0.01)), seed=100 + seed)
        false += verdict.outcome is not Outcome.PASS
    assert false <= 2


def test_error_rate_gate_fails_only_after_its_duration():
    config = {**CONFIG, "gates": {"error_rate": {"max": 0.05, "for_s": 120, "window_s": 30}}}
    # Canary and baseline both at 8% errors: no regression against the baseline, but over the
    # runbook's absolute limit.
    judge = CanaryJudge(config)
    times = {}
    for i in range(30):
        iv = Interval(T0 + 10 * i, T0 + 10 * (i + 1), counts(100, e5=8), counts(1000, e5=80), health=Health(ready=True))
        times[10 * (i + 1)] = judge.observe(iv).check("error_rate").outcome
    assert times[60] is Outcome.INCONCLUSIVE
    first_fail = min(t for t, o in times.items() if o is Outcome.FAIL)
    assert 120 <= first_fail <= 160


def test_complete_outage_fails_at_once():
    verdict = judge_intervals([Interval(T0, T0 + 2, counts(6, e5=6), counts(100), health=Health(ready=True))], CONFIG)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.check("outage").outcome is Outcome.FAIL


def test_not_ready_fails_the_crash_loop_gate():
    verdict = judge_intervals([Interval(T0, T0 + 10, counts(100), counts(100), health=Health(ready=False))], CONFIG)
    assert verdict.outcome is Outcome.FAIL and verdict.check("crash_loop").outcome is Outcome.FAIL


def test_pod_restarts_fail_the_crash_loop_gate():
    intervals = [Interval(T0, T0 + 10, counts(100), counts(100), health=Health(ready=True, restarts=2))]
    assert judge_intervals(intervals, CONFIG).check("crash_loop").outcome is Outcome.FAIL


def test_more_than_three_failed_probes_in_a_row_fail():
    config = {"disabled": {"gpu_headroom": "CPU"}}
    bad = ProbeResult(False, error="HTTP 503")
    good = ProbeResult(True, ttft_ms=20, itl_ms=(5, 5))
    judge = CanaryJudge(config)
    verdicts = []
    for i, probe in enumerate([bad, bad, bad, good, bad, bad, bad, bad]):
        iv = Interval(T0 + i, T0 + i + 1, counts(10), counts(10), canary_probes=(probe,), baseline_probes=(good,),
                      health=Health(ready=True))
        verdicts.append(judge.observe(iv).check("probe_failures").outcome)
    assert Outcome.FAIL not in verdicts[:7]
    assert verdicts[7] is Outcome.FAIL


def test_gpu_headroom_gate_reads_free_memory():
    config = {"disabled": dict(SIMULATION_DISABLED, gpu_headroom=None) and
              {k: v for k, v in SIMULATION_DISABLED.items() if k != "gpu_headroom"}}
    low = judge_intervals([Interval(T0, T0 + 10, counts(10), counts(10),
                                    health=Health(ready=True, gpu_free_fraction=0.04))], config)
    assert low.check("gpu_headroom").outcome is Outcome.FAIL
    unknown = judge_intervals([Interval(T0, T0 + 10, counts(10), counts(10), health=Health(ready=True))], config)
    assert unknown.check("gpu_headroom").outcome is Outcome.INCONCLUSIVE


def test_slow_time_to_first_token_fails_the_probe_comparison():
    config = {"disabled": {"gpu_headroom": "CPU"}}
    judge = CanaryJudge(config)
    verdict = None
    for i in range(40):
        iv = Interval(T0 + i, T0 + i + 1, counts(20), counts(20),
                      canary_probes=(ProbeResult(True, ttft_ms=400 + i, itl_ms=(5, 6)),),
                      baseline_probes=(ProbeResult(True, ttft_ms=40 + i % 5, itl_ms=(5, 6)),),
                      health=Health(ready=True))
        verdict = judge.observe(iv)
    assert verdict.check("compare_ttft_p50").outcome is Outcome.FAIL
    assert verdict.outcome is Outcome.FAIL


def _ttft_verdict(canary_ms, baseline_ms, config, looks=200):
    """Probes of a few milliseconds, the canary's `canary_ms - baseline_ms` slower: the judge's last word."""
    rng = np.random.default_rng(3)
    judge = CanaryJudge(config)
    verdict = None
    for i in range(looks):
        iv = Interval(T0 + i, T0 + i + 1, counts(20), counts(20),
                      canary_probes=(ProbeResult(True, ttft_ms=float(rng.uniform(0.5, 1.5) * canary_ms),
                                                 itl_ms=(5, 6)),),
                      baseline_probes=(ProbeResult(True, ttft_ms=float(rng.uniform(0.5, 1.5) * baseline_ms),
                                                   itl_ms=(5, 6)),),
                      health=Health(ready=True))
        verdict = judge.observe(iv)
    return verdict.check("compare_ttft_p50").outcome


def test_a_few_milliseconds_on_a_millisecond_model_are_not_a_latency_regression():
    # 6 ms against 4 ms is 1.5x slower: with no absolute floor that is the regression itself,
    # while on a shared host it is scheduling jitter no client notices
    config = {"disabled": {"gpu_headroom": "CPU"}}
    assert _ttft_verdict(6.0, 4.0, config) is Outcome.PASS
    assert _ttft_verdict(6.0, 4.0, {**config, "latency": {"min_added_ms": 0}}) is Outcome.FAIL
    assert _ttft_verdict(40.0, 4.0, config) is Outcome.FAIL  # 36 ms slower is one


def test_verdict_round_trips_and_reads_as_a_table():
    verdict = run(Scenario(VersionTruth(600, 0.3), STABLE))
    again = Verdict.from_dict(verdict.to_dict())
    assert again == verdict
    table = verdict.table()
    assert table.startswith("FAIL: ") and "compare_5xx" in table and "DISABLED" in table


def test_histograms_with_empty_and_inf_buckets():
    assert Histogram.empty().quantile(0.5) is None
    assert Histogram.empty().edge_for(0.5) is None
    everything_slow = Histogram((1.0, 10.0, math.inf), (0.0, 0.0, 5.0))
    assert everything_slow.quantile(0.95) == 10.0  # "at least the largest finite bound"
    assert everything_slow.edge_for(0.5) == 10.0
    h = Histogram.from_cumulative({"1": 2, "10": 1, "+Inf": 4} if False else {1.0: 2, 10.0: 1})
    assert h.bounds[-1] == math.inf and h.counts == (2.0, 2.0, 2.0)  # skew clamped, +Inf added
    with pytest.raises(ValueError):
        Histogram((1.0, 2.0), (0.0, 1.0))


def test_counts_refuse_impossible_numbers():
    with pytest.raises(ValueError):
        VersionCounts(5, errors_5xx=4, errors_4xx=3)
    with pytest.raises(ValueError):
        VersionCounts(float("nan"))


@pytest.mark.parametrize("overrides, field", [
    ({"alpha": 0}, "analysis.alpha"),
    ({"errors": {"ratio": 1}}, "analysis.errors.ratio"),
    ({"latency": {"min_added_ms": -1}}, "analysis.latency.min_added_ms"),
    ({"gates": {"error_rate": {"max": 2}}}, "analysis.gates.error_rate.max"),
    ({"gates": {"nope": {}}}, "analysis.gates.nope"),
    ({"disabled": {"gpu_headroom": ""}}, "analysis.disabled.gpu_headroom"),
    ({"disabled": {"warp_drive": "x"}}, "analysis.disabled.warp_drive"),
    ({"speed": 3}, "analysis.speed"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(SpecError) as err:
        JudgeConfig.from_dict(overrides)
    assert err.value.field == field


def test_alpha_is_split_over_the_enabled_comparisons():
    config = JudgeConfig.from_dict(CONFIG)
    assert len(config.enabled_comparisons()) == 4
    assert config.rate_settings("compare_5xx").alpha == pytest.approx(0.0025)


def test_error_rate_gate_counts_refusals_above_the_baselines_rate():
    """Backend failures reach clients as 400 on Triton's generate endpoint: they count as errors,
    but clients' own mistakes (the same 4xx share on both versions) do not."""
    config = {**CONFIG, "gates": {"error_rate": {"max": 0.05, "for_s": 0, "window_s": 30}}}
    same = judge_intervals([Interval(T0, T0 + 10, counts(100, e4=10), counts(1000, e4=100), health=Health(ready=True))],
                           config)
    assert same.check("error_rate").outcome is Outcome.PASS
    worse = judge_intervals([Interval(T0, T0 + 10, counts(100, e4=30), counts(1000, e4=100), health=Health(ready=True))],
                            config)
    assert worse.check("error_rate").outcome is Outcome.FAIL
    assert worse.check("error_rate").numbers["value"] == pytest.approx(0.20)
    with pytest.raises(SpecError, match="count_4xx"):
        JudgeConfig.from_dict({"gates": {"error_rate": {"count_4xx": "some"}}})


@pytest.mark.parametrize("seed", range(5))
def test_equal_versions_pass_when_the_quantile_bucket_moves(seed):
    """Latency near a bucket bound, 1 s intervals at a 50/50 split: the baseline's quantile bucket
    moves between looks early on, and old counts must not be mixed with a rate at a new bound."""
    same = VersionTruth(900, 0.0, latency_median_ms=5.5, latency_sigma=0.6)
    verdict = run(Scenario(same, same, interval_s=1.0), seconds=300, seed=seed)
    assert verdict.outcome is Outcome.PASS, verdict.table()


def test_a_slow_moment_for_both_versions_is_not_the_canarys_regression():
    """After a PASS the watch compares the canary with the baseline in the same interval: a host
    hiccup that slows both down (or a burst of bad input failing both) is not held against the canary."""
    same = VersionTruth(900, 0.0, latency_median_ms=5.0, latency_sigma=0.5)
    judge = CanaryJudge(CONFIG)
    verdict = None
    for iv in Scenario(same, same, interval_s=1.0).intervals(np.random.default_rng(11), seconds=120, start=T0):
        verdict = judge.observe(iv)
    assert verdict.outcome is Outcome.PASS
    hiccup = VersionTruth(900, 0.0, error_4xx=0.3, latency_median_ms=40.0, latency_sigma=0.5)
    for iv in Scenario(hiccup, hiccup, interval_s=1.0).intervals(np.random.default_rng(12), seconds=8,
                                                                 start=verdict.at):
        verdict = judge.observe(iv)
    assert verdict.outcome is not Outcome.FAIL, verdict.table()
