"""CanaryAnalysis: how looks turn gateway history, probes and readiness into judged intervals."""

from __future__ import annotations

from llm_release.analysis.canary import MAX_STEPS_PER_QUERY, CanaryAnalysis, StepWatch
from llm_release.analysis.judge import CanaryJudge
from llm_release.analysis.samples import Health, Interval, ProbeResult, VersionCounts
from llm_release.analysis.verdict import Outcome

T0 = 1_800_000_000.0
CONFIG = {"disabled": {"gpu_headroom": "CPU"}}


class History:
    """Stands in for the gateway's history: whole steps from start, as GatewaySignals returns them."""

    def __init__(self):
        self.calls = []

    def intervals(self, start, end, step_s):
        self.calls.append((start, end))
        n = int((end - start) // step_s)
        return [Interval(start + i * step_s, start + (i + 1) * step_s, VersionCounts(10), VersionCounts(10))
                for i in range(n)]


def test_a_long_history_is_read_in_chunks_and_nothing_is_read_twice():
    history = History()
    now = T0 + 3 * MAX_STEPS_PER_QUERY + 10.5
    analysis = CanaryAnalysis(history, CanaryJudge(CONFIG), since=T0, step_s=1.0, lag_s=0.0, clock=lambda: now)
    verdict = analysis.poll()
    assert verdict.intervals == 3 * MAX_STEPS_PER_QUERY + 10
    assert len(history.calls) == 4 and all(b - a <= MAX_STEPS_PER_QUERY for a, b in history.calls)
    assert analysis.poll().intervals == verdict.intervals  # the half step left waits for the next look


def test_probes_and_readiness_taken_at_a_look_go_to_its_newest_interval():
    clock = [T0 + 5.0]
    probes = (ProbeResult(False, error="HTTP 400"),)
    analysis = CanaryAnalysis(History(), CanaryJudge(CONFIG), since=T0, step_s=1.0, lag_s=0.0,
                              prober=lambda: (probes, ()), readiness=lambda: False, clock=lambda: clock[0])
    verdict = analysis.poll()
    assert verdict.check("crash_loop").outcome is Outcome.FAIL  # not READY, read now
    assert verdict.check("probe_failures").numbers["consecutive"] == 1


def test_a_reading_that_fails_is_unknown_not_fatal():
    def broken():
        raise ConnectionError("Triton unreachable")

    analysis = CanaryAnalysis(History(), CanaryJudge(CONFIG), since=T0, step_s=1.0, lag_s=0.0,
                              readiness=broken, clock=lambda: T0 + 3)
    assert analysis.poll().check("crash_loop").outcome is Outcome.INCONCLUSIVE


def test_a_step_ends_on_fail_at_once_on_pass_after_the_minimum_and_gives_up_at_the_maximum():
    watch = StepWatch(60, 600)
    fail = CanaryJudge(CONFIG).observe(Interval(T0, T0 + 1, VersionCounts(10, 10), VersionCounts(10),
                                                health=Health(ready=True)))
    assert fail.outcome is Outcome.FAIL and watch.decide(fail, 1) == "FAIL"
    assert watch.decide(None, 30) is None and watch.decide(None, 600) == "TIMEOUT"
