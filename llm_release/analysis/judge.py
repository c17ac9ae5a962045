"""The canary judge: fed one interval of counts at a time, answers with a Verdict.

One object per release step (the canary at one weight against its baseline). It combines
- sequential canary-versus-baseline comparisons (5xx, 4xx, latency quantiles from the gateway
  histogram, time to first token and inter-token latency from the streaming probe), which
  keep soaking while the evidence is inconclusive and stop as soon as it is not, with their
  error chances controlled however often the judge is read (llm_release.analysis.sequential);
- the runbook's fixed-threshold and health gates (llm_release.analysis.gates).

FAIL is final for the judge's lifetime: a step that failed is rolled back even if the canary
looks good again afterwards. PASS is not: the judge keeps watching until the step ends, and
a canary that turns bad later fails. A look at an interval without data (Prometheus down,
the canary's cluster missing) is INCONCLUSIVE whatever came before: a verdict is never older
than the data it stands on.

Pure Python: the same object runs on simulated counts in tests and benchmarks and on
Prometheus data in production.
"""

from __future__ import annotations

from llm_release.analysis.config import CHECKS, COMPARISONS, JudgeConfig
from llm_release.analysis.gates import DurationGate, Window
from llm_release.analysis.samples import DEFAULT_BOUNDS_MS, Histogram, Interval, ProbeResult
from llm_release.analysis.sequential import SequentialRateTest
from llm_release.analysis.verdict import CheckResult, Outcome, Verdict, combine


class CanaryJudge:
    def __init__(self, config: JudgeConfig | dict | None = None):
        self.config = config if isinstance(config, JudgeConfig) else JudgeConfig.from_dict(config)
        c = self.config
        self.tests = {name: SequentialRateTest(name, c.rate_settings(name), what=COMPARISONS[name])
                      for name in c.enabled_comparisons()}
        g = c.doc["gates"]
        self.error_rate = DurationGate("error_rate", window_s=g["error_rate"]["window_s"],
                                       for_s=g["error_rate"]["for_s"], limit=g["error_rate"]["max"], unit="%")
        self.latency_p95 = DurationGate("latency_p95", window_s=g["latency_p95"]["window_s"],
                                        for_s=g["latency_p95"]["for_s"], limit=g["latency_p95"]["max_ms"], unit="ms")
        self.ttft_p95 = DurationGate("ttft_p95", window_s=g["ttft_p95"]["window_s"], for_s=0.0,
                                     limit=g["ttft_p95"]["max_ms"] or 0.0, unit="ms")
        self.itl_p95 = DurationGate("itl_p95", window_s=g["itl_p95"]["window_s"], for_s=0.0,
                                    limit=g["itl_p95"]["max_ms"] or 0.0, unit="ms")
        self.outage_window = Window(g["outage"]["window_s"])
        self._outage: CheckResult | None = None
        self._baseline_latency: Histogram | None = None
        self._canary_latency: Histogram | None = None
        self._slowdown = float(c.doc["latency"]["slowdown"])
        self._min_added_ms = float(c.doc["latency"]["min_added_ms"])
        self._probe_history = {which: {"canary": [], "baseline": []} for which in ("ttft", "itl")}
        self._not_ready_since: float | None = None
        self._restarts = 0.0
        self._ready: bool | None = None
        self._gpu_free: float | None = None
        self._consecutive_probe_failures = 0
        self._probes_seen = 0
        self._last_probe_error: str | None = None
        self._sticky: dict[str, CheckResult] = {}  # health gates that failed stay failed
        self.started: float | None = None
        self.last: Interval | None = None
        self.intervals = 0
        self.canary_requests = 0.0
        self.baseline_requests = 0.0
        self.decided_at: float | None = None
        self._verdict: Verdict | None = None

    # -- feeding ----------------------------------------------------------------------------

    def observe(self, interval: Interval) -> Verdict:
        """Take one interval (in time order) and return the verdict after it."""
        if self.last is not None and interval.start < self.last.end - 1e-6:
            raise ValueError(f"intervals must come in time order without overlap: {interval.start} < {self.last.end}")
        if self.started is None:
            self.started = interval.start
        self.last = interval
        self.intervals += 1
        if interval.canary is not None:
            self.canary_requests += interval.canary.requests
        if interval.baseline is not None:
            self.baseline_requests += interval.baseline.requests
        self._compare(interval)
        self._thresholds(interval)
        self._health(interval)
        self._verdict = self._make_verdict()
        return self._verdict

    def verdict(self) -> Verdict:
        if self._verdict is None:
            raise ValueError("no interval observed yet")
        return self._verdict

    def _compare(self, iv: Interval) -> None:
        c, b = iv.canary, iv.baseline
        if c is not None and b is not None:
            self._rate("compare_5xx", c.errors_5xx, c.requests, b.errors_5xx, b.requests)
            self._rate("compare_4xx", c.errors_4xx, c.requests, b.errors_4xx, b.requests)
            if c.latency_ms is not None and b.latency_ms is not None:
                base_all = self._baseline_latency.merged(b.latency_ms) if self._baseline_latency else b.latency_ms
                canary_all = self._canary_latency.merged(c.latency_ms) if self._canary_latency else c.latency_ms
                for name, q in (("compare_latency_p50", 0.5), ("compare_latency_p95", 0.95)):
                    if name not in self.tests:
                        continue
                    # The bound is taken from the baseline seen *before* this interval where
                    # there is one, so it does not depend on the counts it is applied to.
                    edge = (self._baseline_latency or b.latency_ms).edge_for(q)
                    if edge is None:
                        continue
                    test = self.tests[name]
                    test.what = f"requests slower than the baseline's p{round(q * 100)} bucket ({edge:g} ms)"
                    reference = self._baseline_latency or b.latency_ms
                    slowed = reference.fraction_at_or_below(self._slowed_cut(edge))
                    at_edge = reference.fraction_at_or_below(edge)
                    gap = (at_edge - slowed) if slowed is not None and at_edge is not None else None
                    test.update_totals(_above(canary_all, edge), _above(base_all, edge), _above(c.latency_ms, edge),
                                       _above(b.latency_ms, edge), gap=gap)
                self._baseline_latency, self._canary_latency = base_all, canary_all
        self._probe_compare("compare_ttft_p50", iv.canary_probes, iv.baseline_probes, "ttft")
        self._probe_compare("compare_itl_p50", iv.canary_probes, iv.baseline_probes, "itl")

    def _slowed_cut(self, edge: float) -> float:
        """The baseline values a regression would push above `edge`: those above this cut. A
        regression makes every answer `slowdown` times slower and at least `min_added_ms` slower."""
        return max(0.0, min(edge / self._slowdown, edge - self._min_added_ms))

    def _rate(self, name: str, events, samples, base_events, base_samples) -> None:
        if name in self.tests:
            self.tests[name].update(events, samples, base_events, base_samples)

    def _probe_compare(self, name: str, canary: tuple[ProbeResult, ...], baseline: tuple[ProbeResult, ...],
                       which: str) -> None:
        if name not in self.tests:
            return
        history = self._probe_history[which]
        new_canary = [v for v in (_probe_value(p, which) for p in canary) if v is not None]
        new_base = [v for v in (_probe_value(p, which) for p in baseline) if v is not None]
        reference = history["baseline"] or new_base
        history["canary"].extend(new_canary)
        history["baseline"].extend(new_base)
        if not reference:
            return
        edge = Histogram.from_values(reference, DEFAULT_BOUNDS_MS).edge_for(0.5)
        if edge is None:
            return
        # What a baseline slowed down by the regression's factor would put above the bound.
        cut = self._slowed_cut(edge)
        gap = (sum(1 for v in reference if cut < v <= edge)) / len(reference)
        test = self.tests[name]
        test.what = f"{COMPARISONS[name].split(' exceeds')[0]} above the baseline's median bucket ({edge:g} ms)"
        test.update_totals(_count_above(history["canary"], edge), _count_above(history["baseline"], edge),
                           _count_above(new_canary, edge), _count_above(new_base, edge), gap=gap)

    def _thresholds(self, iv: Interval) -> None:
        g = self.config.doc["gates"]
        for gate in (self.error_rate, self.latency_p95):
            gate.window.add(iv)
        requests, e5, e4, hist = self.error_rate.window.canary_totals()
        need = g["error_rate"]["min_requests"]
        errors, detail = self._errors_for_rate(e5, e4, requests)
        self.error_rate.observe(iv, errors / requests if requests >= need else None,
                                f"{detail} of {requests:,.0f} requests in {self.error_rate.window.seconds:.0f} s")
        requests, _, _, hist = self.latency_p95.window.canary_totals()
        p95 = hist.quantile(0.95) if hist is not None and hist.total >= g["latency_p95"]["min_requests"] else None
        self.latency_p95.observe(iv, p95, f"{hist.total if hist else 0:,.0f} requests in "
                                          f"{self.latency_p95.window.seconds:.0f} s")
        for gate, which in ((self.ttft_p95, "ttft"), (self.itl_p95, "itl")):
            gate.window.add(iv)
            values = gate.window.probe_values(which)
            value = Histogram.from_values(values).quantile(0.95) if values else None
            gate.observe(iv, value, f"{len(values)} probe samples")
        self.outage_window.add(iv)
        if "outage" not in self._sticky:
            requests, e5, e4, _ = self.outage_window.canary_totals()
            window = self.outage_window.seconds
            detail = f"{e5 + e4:,.0f} of {requests:,.0f} requests failed in the last {window:.0f} s"
            if requests >= g["outage"]["min_requests"] and e5 + e4 >= requests:
                self._sticky["outage"] = CheckResult("outage", "health", Outcome.FAIL,
                                                     f"complete outage: {detail}", detail, "any request answered",
                                                     {"requests": requests, "errors": e5 + e4, "at": iv.end})
            elif requests >= g["outage"]["min_requests"]:
                self._outage = CheckResult("outage", "health", Outcome.PASS, f"answering: {detail}", detail,
                                           "any request answered", {"requests": requests, "errors": e5 + e4})
            else:
                self._outage = CheckResult("outage", "health", Outcome.INCONCLUSIVE,
                                           f"too few canary requests to tell ({requests:,.0f} < "
                                           f"{g['outage']['min_requests']}) in the last {window:.0f} s",
                                           detail, "any request answered", {"requests": requests})

    def _errors_for_rate(self, e5: float, e4: float, requests: float) -> tuple[float, str]:
        """Errors the error-rate gate counts: 5xx, plus 4xx as configured.

        Triton (2.51) answers every error a model returns through generate as HTTP 400, so a
        failing version shows up as 4xx, not 5xx. Clients' own mistakes are 4xx too, at the same
        rate on both versions: by default only the canary's 4xx above the baseline's 4xx rate count.
        """
        mode = self.config.doc["gates"]["error_rate"]["count_4xx"]
        if mode == "none":
            return e5, f"{e5:,.0f} 5xx"
        if mode == "all":
            return e5 + e4, f"{e5:,.0f} 5xx + {e4:,.0f} 4xx"
        base = self.error_rate.window.baseline_4xx_rate()
        excess = max(0.0, e4 - requests * (base or 0.0))
        return e5 + excess, f"{e5:,.0f} 5xx + {excess:,.0f} 4xx above the baseline's rate"

    def _health(self, iv: Interval) -> None:
        h = iv.health
        g = self.config.doc["gates"]
        if h.ready is not None:
            self._ready = h.ready
            if h.ready:
                self._not_ready_since = None
            elif self._not_ready_since is None:
                self._not_ready_since = iv.end
            if (not h.ready and iv.end - self._not_ready_since >= g["crash_loop"]["not_ready_for_s"]
                    and "crash_loop" not in self._sticky):
                self._sticky["crash_loop"] = CheckResult(
                    "crash_loop", "health", Outcome.FAIL, "the canary version is not READY in Triton",
                    "not READY", "READY", {"not_ready_since": self._not_ready_since})
        if h.restarts:
            self._restarts += h.restarts
            if self._restarts > g["crash_loop"]["max_restarts"] and "crash_loop" not in self._sticky:
                self._sticky["crash_loop"] = CheckResult(
                    "crash_loop", "health", Outcome.FAIL,
                    f"the canary's pods restarted {self._restarts:.0f} times during the step",
                    f"{self._restarts:.0f} restarts", f"<= {g['crash_loop']['max_restarts']}",
                    {"restarts": self._restarts})
        if h.gpu_free_fraction is not None:
            self._gpu_free = h.gpu_free_fraction
        for probe in iv.canary_probes:
            self._probes_seen += 1
            if probe.ok:
                self._consecutive_probe_failures = 0
            else:
                self._consecutive_probe_failures += 1
                self._last_probe_error = probe.error
        limit = g["probe_failures"]["max_consecutive"]
        if self._consecutive_probe_failures > limit and "probe_failures" not in self._sticky:
            self._sticky["probe_failures"] = CheckResult(
                "probe_failures", "health", Outcome.FAIL,
                f"{self._consecutive_probe_failures} streaming probes of the canary failed in a row "
                f"(last: {self._last_probe_error})", f"{self._consecutive_probe_failures} in a row",
                f"<= {limit} in a row", {"consecutive": self._consecutive_probe_failures})

    # -- answering --------------------------------------------------------------------------

    def _health_results(self) -> dict[str, CheckResult]:
        g = self.config.doc["gates"]
        out: dict[str, CheckResult] = {}
        if self._ready is None:
            out["crash_loop"] = CheckResult("crash_loop", "health", Outcome.INCONCLUSIVE,
                                            "readiness of the canary not measured yet", "unknown", "READY")
        else:
            out["crash_loop"] = CheckResult("crash_loop", "health", Outcome.PASS if self._ready else Outcome.INCONCLUSIVE,
                                            "READY, no restarts" if self._ready else "not READY (waiting)",
                                            "READY" if self._ready else "not READY", "READY",
                                            {"restarts": self._restarts})
        limit = g["probe_failures"]["max_consecutive"]
        if self._probes_seen == 0:
            out["probe_failures"] = CheckResult("probe_failures", "health", Outcome.INCONCLUSIVE,
                                                "no streaming probe of the canary yet", "no probes", f"<= {limit} in a row")
        else:
            out["probe_failures"] = CheckResult(
                "probe_failures", "health", Outcome.PASS,
                f"{self._consecutive_probe_failures} failed in a row now, of {self._probes_seen} probes",
                f"{self._consecutive_probe_failures} in a row", f"<= {limit} in a row",
                {"consecutive": self._consecutive_probe_failures, "probes": self._probes_seen})
        need = g["gpu_headroom"]["min_free"]
        if self._gpu_free is None:
            out["gpu_headroom"] = CheckResult("gpu_headroom", "health", Outcome.INCONCLUSIVE,
                                              "no GPU memory reading for the canary's runtime", "no data",
                                              f">= {100 * need:.0f}% free")
        else:
            ok = self._gpu_free >= need
            out["gpu_headroom"] = CheckResult(
                "gpu_headroom", "health", Outcome.PASS if ok else Outcome.FAIL,
                f"{100 * self._gpu_free:.1f}% of GPU memory free "
                + ("" if ok else "; not enough to raise traffic (old and new versions must fit together)"),
                f"{100 * self._gpu_free:.1f}% free", f">= {100 * need:.0f}% free", {"free_fraction": self._gpu_free})
        out.update(self._sticky)
        if "outage" not in out:
            out["outage"] = self._outage or CheckResult("outage", "health", Outcome.INCONCLUSIVE,
                                                        "no canary requests yet", "no data", "any request answered")
        return out

    def _make_verdict(self) -> Verdict:
        health = self._health_results()
        results: list[CheckResult] = []
        for name in CHECKS:
            reason = self.config.disabled_reason(name)
            if reason:
                results.append(CheckResult(name, "compare" if name in COMPARISONS else "threshold",
                                           Outcome.DISABLED, f"disabled: {reason}"))
            elif name in self.tests:
                results.append(self.tests[name].result())
            elif name in health:
                results.append(health[name])
            else:
                results.append(getattr(self, name).result())
        outcome, reason = combine(results)
        iv = self.last
        previous = self._verdict
        if previous is not None and previous.outcome is Outcome.FAIL:
            outcome, reason = Outcome.FAIL, previous.reason
        elif iv.canary is None or iv.baseline is None or iv.problem:
            missing = iv.problem or ("no data for the canary's gateway cluster" if iv.canary is None
                                     else "no data for the baseline's gateway cluster")
            outcome, reason = Outcome.INCONCLUSIVE, f"no data for the latest interval: {missing}"
        elif outcome is Outcome.INCONCLUSIVE and self.canary_requests == 0:
            reason = "no traffic reached the canary: nothing to judge; " + reason
        if outcome is Outcome.FAIL and self.decided_at is None:
            self.decided_at = iv.end
        elif outcome is Outcome.PASS and (previous is None or previous.outcome is not Outcome.PASS):
            self.decided_at = iv.end
        elif outcome is Outcome.INCONCLUSIVE:
            self.decided_at = None
        return Verdict(outcome, reason, tuple(results), iv.end, self.started, self.intervals,
                       self.canary_requests, self.baseline_requests, self.decided_at)


def _above(hist: Histogram, edge: float) -> tuple[float, float]:
    """(observations above `edge`, all observations)."""
    return hist.total - hist.cumulative_at(edge), hist.total


def _count_above(values: list[float], edge: float) -> tuple[float, float]:
    return float(sum(1 for v in values if v > edge)), float(len(values))


def _probe_value(probe: ProbeResult, which: str) -> float | None:
    if not probe.ok:
        return None
    if which == "ttft":
        return probe.ttft_ms
    return sum(probe.itl_ms) / len(probe.itl_ms) if probe.itl_ms else None


def judge_intervals(intervals, config: JudgeConfig | dict | None = None) -> Verdict:
    """Replay intervals through a fresh judge and return the last verdict."""
    judge = CanaryJudge(config)
    verdict = None
    for interval in intervals:
        verdict = judge.observe(interval)
    if verdict is None:
        raise ValueError("no intervals to judge")
    return verdict
