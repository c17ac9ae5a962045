"""Fixed-threshold gates with durations: the runbook's rollback triggers, on the canary alone.

They sit beside the canary-versus-baseline comparison and catch what a comparison cannot:
a canary that is bad in absolute terms while the baseline is bad too (error rate > 5% for
> 5 min, p95 > 6 s for > 10 min), a version that is down (every request failing, not READY,
pods restarting, probes failing one after another), and not enough GPU memory to raise
traffic. A breached gate holds the step (INCONCLUSIVE) until the breach has lasted its
duration, then fails; a gate with no data is INCONCLUSIVE, never PASS.
"""

from __future__ import annotations

from collections import deque

from llm_release.analysis.samples import Histogram, Interval
from llm_release.analysis.verdict import CheckResult, Outcome


class Window:
    """The intervals that ended within the last `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.items: deque[Interval] = deque()

    def add(self, interval: Interval) -> None:
        self.items.append(interval)
        while self.items and self.items[0].end <= interval.end - self.seconds:
            self.items.popleft()

    def baseline_4xx_rate(self) -> float | None:
        requests = e4 = 0.0
        for item in self.items:
            if item.baseline is not None:
                requests += item.baseline.requests
                e4 += item.baseline.errors_4xx
        return e4 / requests if requests else None

    def canary_totals(self) -> tuple[float, float, float, Histogram | None]:
        requests = e5 = e4 = 0.0
        hist: Histogram | None = None
        for item in self.items:
            if item.canary is None:
                continue
            requests += item.canary.requests
            e5 += item.canary.errors_5xx
            e4 += item.canary.errors_4xx
            if item.canary.latency_ms is not None:
                hist = item.canary.latency_ms if hist is None else hist.merged(item.canary.latency_ms)
        return requests, e5, e4, hist

    def probe_values(self, which: str) -> list[float]:
        values = []
        for item in self.items:
            for probe in item.canary_probes:
                if not probe.ok:
                    continue
                if which == "ttft" and probe.ttft_ms is not None:
                    values.append(probe.ttft_ms)
                elif which == "itl" and probe.itl_ms:
                    values.extend(probe.itl_ms)
        return values


class DurationGate:
    """A value over a rolling window that must stay within a limit; fails once over it for `for_s`."""

    def __init__(self, name: str, *, window_s: float, for_s: float, limit: float, unit: str):
        self.name = name
        self.window = Window(window_s)
        self.for_s = for_s
        self.limit = limit
        self.unit = unit
        self.breach_since: float | None = None
        self.value: float | None = None
        self.detail = ""
        self.outcome = Outcome.INCONCLUSIVE
        self.failed_at: float | None = None

    def observe(self, interval: Interval, value: float | None, detail: str) -> None:
        """`value` is the windowed value after adding `interval` (None: not enough data)."""
        self.value, self.detail = value, detail
        if value is None:
            self.outcome = Outcome.FAIL if self.failed_at is not None else Outcome.INCONCLUSIVE
            return
        if value > self.limit:
            if self.breach_since is None:
                self.breach_since = interval.end - min(interval.seconds, self.window.seconds)
            if interval.end - self.breach_since >= self.for_s:
                self.failed_at = self.failed_at or interval.end
        else:
            self.breach_since = None
        if self.failed_at is not None:
            self.outcome = Outcome.FAIL
        elif self.breach_since is not None:
            self.outcome = Outcome.INCONCLUSIVE
        else:
            self.outcome = Outcome.PASS
        self._end = interval.end

    def result(self) -> CheckResult:
        limit = f"<= {_fmt(self.limit, self.unit)} (fails when over it for {self.for_s:.0f} s)"
        numbers = {"value": self.value, "limit": self.limit, "for_s": self.for_s, "window_s": self.window.seconds,
                   "breach_since": self.breach_since, "failed_at": self.failed_at}
        if self.value is None:
            reason = f"not enough canary data in the last {self.window.seconds:.0f} s ({self.detail})"
            if self.failed_at is not None:
                reason = f"failed earlier (over the limit for {self.for_s:.0f} s); {reason}"
            return CheckResult(self.name, "threshold", self.outcome, reason, "no data", limit, numbers)
        observed = f"{_fmt(self.value, self.unit)} ({self.detail})"
        if self.outcome is Outcome.FAIL:
            reason = f"{_fmt(self.value, self.unit)} is over {_fmt(self.limit, self.unit)} for at least {self.for_s:.0f} s"
        elif self.outcome is Outcome.INCONCLUSIVE:
            held = self._end - self.breach_since
            reason = (f"{_fmt(self.value, self.unit)} is over {_fmt(self.limit, self.unit)} for {held:.0f} s; "
                      f"fails at {self.for_s:.0f} s")
        else:
            reason = f"{_fmt(self.value, self.unit)} is within {_fmt(self.limit, self.unit)}"
        return CheckResult(self.name, "threshold", self.outcome, reason, observed, limit, numbers)


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{100 * value:.2f}%"
    if unit == "ms":
        return f"{value:,.0f} ms" if value >= 10 else f"{value:.2f} ms"
    return f"{value:g}{unit}"
