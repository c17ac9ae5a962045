"""A sequential canary-versus-baseline test on a rate: is the canary's share of "bad" events
(errors, refusals, requests slower than the baseline's quantile) a regression?

Wald's sequential probability ratio test, with the baseline as the reference:

- H0 (good): the canary's event rate equals the baseline's rate p0;
- H1 (bad): it is the smallest rate we call a regression, p1 = max(ratio * p0, p0 + increase)
  (capped half way to 1), the minimum effect size: smaller differences are not worth a
  rollback, and no test can tell them apart quickly at low traffic.

The log likelihood ratio of the canary's events under H1 and H0 is taken with p0 estimated
from the baseline's counts so far (the baseline sees the same traffic at the same time, and
usually far more of it), over all the canary's counts until the first decision. The test decides FAIL once the ratio reaches 1/alpha and
PASS once it falls to beta. The ratio is a martingale under H0 (resp. its inverse under H1),
so by Ville's inequality the chance of ever crossing the wrong boundary is at most alpha
(resp. beta), however often one looks: the test can be read after every scrape and keep
soaking while the evidence is inconclusive. Rates above p1 fail faster, rates below p0 pass
faster (the likelihood ratio is monotone in the rate).

Watching the whole step: once the evidence for "good" reaches the PASS boundary, the test
goes on interval by interval from that boundary, each interval comparing the canary with the
baseline in that same interval (see _watch_step), and the evidence is not allowed to pile up
further (the log ratio is floored there), so a canary that turns bad late
in a step climbs from the PASS boundary to the FAIL boundary instead of having to undo minutes
of good history first: a late fault is caught within about twice the time a fresh one is. A
PASS holds while the evidence still leans towards "no regression" (log ratio below 0) and is
withdrawn, back to soaking, once it leans the other way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llm_release.analysis.verdict import CheckResult, Outcome

#: Standard errors by which the baseline's rate is moved against a decision (see update()).
BASELINE_Z = 1.0
#: The largest rate ratio the watch after a PASS assumes: with a clean baseline (rate near 0)
#: the regression's ratio is huge, and one baseline event would wipe out a late fault's evidence.
WATCH_MAX_RATIO = 20.0


@dataclass(frozen=True)
class RateTestSettings:
    alpha: float  # chance of failing a canary as good as its baseline (false rollback)
    beta: float  # chance of passing a canary at least as bad as the regression rate (miss)
    ratio: float  # the regression rate is this multiple of the baseline's rate...
    increase: float  # ...or the baseline's rate plus this, whichever is larger
    min_samples_to_pass: int  # canary events+non-events before a PASS
    min_samples_to_fail: int  # and before a FAIL (small: gross faults must fail fast)
    min_baseline_samples: int  # baseline samples before the canary is compared at all

    def regression_rate(self, p0: float) -> float:
        p1 = max(self.ratio * p0, p0 + self.increase)
        return min(p1, p0 + (1.0 - p0) / 2.0)


class SequentialRateTest:
    """One signal (e.g. 5xx) compared between canary and baseline, interval by interval."""

    def __init__(self, name: str, settings: RateTestSettings, *, what: str):
        self.name = name
        self.settings = settings
        self.what = what  # "5xx responses", "requests slower than the baseline's p95 (250 ms)"
        self.upper = math.log(1.0 / settings.alpha)
        self.lower = math.log(settings.beta)
        self.llr = 0.0  # evidence for a regression, against the baseline's rate taken high
        self.llr_pass = 0.0  # the same against the baseline's rate taken low (decides PASS)
        self.canary_events = 0.0
        self.canary_samples = 0.0
        self.baseline_events = 0.0
        self.baseline_samples = 0.0
        # (canary events, samples, baseline events, samples) per interval, waiting for a baseline
        self._pending: list[tuple[float, float, float, float]] = []
        self._watching = False  # after the first PASS: watching for a late regression
        self.gap: float | None = None  # set by latency tests: p1 - p0 under the slowdown that counts
        self.outcome = Outcome.INCONCLUSIVE
        self.decided_after: float | None = None  # canary samples when it last became final

    def baseline_rate(self, z: float = 0.0) -> float:
        """The baseline's rate so far, moved z standard errors up (z > 0) or down (z < 0).

        Pulled slightly towards 1/2 (Jeffreys) so zero events is not a rate of zero.
        """
        n = self.baseline_samples + 1.0
        p = (self.baseline_events + 0.5) / n
        if z:
            p += z * math.sqrt(p * (1.0 - p) / n)
        return min(max(p, 0.5 / n), 1.0 - 0.5 / n)

    def update(self, canary_events: float, canary_samples: float, baseline_events: float,
               baseline_samples: float) -> Outcome:
        """Add one interval's counts (events among samples, for each version)."""
        self.baseline_events += baseline_events
        self.baseline_samples += baseline_samples
        if canary_samples > 0:
            self._pending.append((canary_events, canary_samples, baseline_events, baseline_samples))
        return self._evaluate(None)

    def update_totals(self, canary_total: tuple[float, float], baseline_total: tuple[float, float],
                      canary_new: tuple[float, float], baseline_new: tuple[float, float], *,
                      gap: float | None = None) -> Outcome:
        """For events whose definition moves with the baseline (above a quantile's bucket bound):
        every count so far is re-taken at the current definition, so old intervals counted at
        another bound are not mixed with a rate at this one; the interval's own counts
        (`canary_new`, `baseline_new`) feed the watch after a PASS."""
        self.baseline_events, self.baseline_samples = baseline_total
        self.gap = gap
        if canary_new[1] > 0:
            self._pending.append((*canary_new, *baseline_new))
        return self._evaluate(canary_total)

    def _evaluate(self, canary_total: tuple[float, float] | None) -> Outcome:
        if self.baseline_samples < self.settings.min_baseline_samples:
            return self.outcome
        fail_step = self._steps(+BASELINE_Z)
        for events, samples, base_events, base_samples in self._pending:
            if canary_total is None:
                self.canary_events += events
                self.canary_samples += samples
            if self._watching:
                self.llr = max(self.lower, self.llr + self._watch_step(events, samples, base_events, base_samples))
        self._pending.clear()
        if canary_total is not None:
            self.canary_events, self.canary_samples = canary_total
        if self._watching:
            self.llr_pass = self.llr
        else:
            # Until the first PASS the ratio is taken over all canary counts with the baseline
            # as known now, so early, noisy estimates of it do not stay baked into the evidence.
            # The baseline's own uncertainty counts against deciding: a FAIL must hold against
            # its rate taken high, a PASS against its rate taken low (a lower regression rate).
            # With a baseline far larger than the canary (small weights) both are its estimate;
            # at a 50/50 split the judge soaks longer instead of deciding on noise.
            pass_step = self._steps(-BASELINE_Z)
            k, n = self.canary_events, self.canary_samples
            self.llr = k * fail_step[0] + (n - k) * fail_step[1]
            self.llr_pass = k * pass_step[0] + (n - k) * pass_step[1]
        self.outcome = self._decide()
        if self.outcome is Outcome.PASS and not self._watching:
            self._watching = True
            self.llr = self.llr_pass = max(min(self.llr, self.llr_pass), self.lower)
        return self.outcome

    def regression_rate(self, p0: float) -> float:
        """The smallest canary rate that is a regression, for a baseline rate p0.

        For latency the regression is a slowdown, and the caller knows what share of the
        baseline a slowed-down baseline would put above the bound: that difference (`gap`) is
        kept for p0 moved by its uncertainty.
        """
        if self.gap is None:
            return self.settings.regression_rate(p0)
        # No cap half way to 1 here: for a tight distribution (every baseline probe at 4-5 ms)
        # the slowed-down baseline puts nearly all of it above the bound, and a cap would call a
        # far smaller slowdown a regression. Only short of 1, so a fast sample stays possible.
        return min(p0 + max(self.gap, self.settings.increase), 1.0 - 0.5 / (self.baseline_samples + 1.0))

    def _watch_step(self, events: float, samples: float, base_events: float, base_samples: float) -> float:
        """Evidence from one interval after a PASS, canary against baseline in that same interval.

        Given how many events both versions had in the interval, under H0 (equal rates) each
        event is the canary's with the chance of its share of the samples; under H1 (the
        canary's rate is the regression rate) with a larger chance. Conditioning on the
        interval's events makes the test blind to what hits both versions at once (a busy
        host, a slow second, a burst of bad client input): those raise both counts, not the
        canary's share. Exact under H0, so the watch keeps the error control of the test.
        """
        if samples <= 0 or base_samples <= 0 or events + base_events <= 0:
            return 0.0
        p0 = self.baseline_rate()
        ratio = min(self.regression_rate(p0) / p0, WATCH_MAX_RATIO)
        share = samples / (samples + base_samples)
        theta0, theta1 = share, ratio * samples / (ratio * samples + base_samples)
        return events * math.log(theta1 / theta0) + base_events * math.log((1.0 - theta1) / (1.0 - theta0))

    def _steps(self, z: float) -> tuple[float, float]:
        """Log likelihood ratio added by one event and by one non-event."""
        p0 = self.baseline_rate(z)
        p1 = self.regression_rate(p0)
        return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))

    def _decide(self) -> Outcome:
        s = self.settings
        if self.llr >= self.upper and self.canary_samples >= s.min_samples_to_fail:
            outcome = Outcome.FAIL
        elif self.llr_pass <= self.lower and self.canary_samples >= s.min_samples_to_pass:
            outcome = Outcome.PASS
        elif self.outcome is Outcome.PASS and self.llr < 0:
            # A PASS holds while the evidence still favours "no regression"; it is withdrawn
            # (back to soaking) as soon as the evidence leans towards a regression.
            outcome = Outcome.PASS
        else:
            outcome = Outcome.INCONCLUSIVE
        if outcome is not self.outcome and outcome is not Outcome.INCONCLUSIVE:
            self.decided_after = self.canary_samples
        return outcome

    def result(self) -> CheckResult:
        s = self.settings
        p0 = self.baseline_rate()
        p1 = self.regression_rate(p0)
        canary_rate = self.canary_events / self.canary_samples if self.canary_samples else None
        base_rate = self.baseline_events / self.baseline_samples if self.baseline_samples else None
        numbers = {
            "canary_events": self.canary_events, "canary_samples": self.canary_samples,
            "baseline_events": self.baseline_events, "baseline_samples": self.baseline_samples,
            "canary_rate": canary_rate, "baseline_rate": base_rate, "regression_rate": round(p1, 6),
            "log_likelihood_ratio": round(self.llr, 4), "log_likelihood_ratio_pass": round(self.llr_pass, 4), "fail_at": round(self.upper, 4),
            "pass_at": round(self.lower, 4), "alpha": s.alpha, "beta": s.beta,
        }
        canary = _rate_text(self.canary_events, self.canary_samples)
        reference = _rate_text(self.baseline_events, self.baseline_samples) + " on the baseline"
        if self.baseline_samples < s.min_baseline_samples:
            reason = (f"no baseline to compare with yet ({self.baseline_samples:.0f} of "
                      f"{s.min_baseline_samples} samples)")
        elif self.canary_samples <= 0:
            reason = "no canary samples yet"
        elif self.outcome is Outcome.FAIL:
            reason = (f"{self.what}: {canary} on the canary against {_pct(base_rate)} on the baseline; "
                      f"a regression (>= {_pct(p1)}) is {_odds(self.llr)}x more likely than none "
                      f"(fails at {_odds(self.upper)}x)")
        elif self.outcome is Outcome.PASS:
            reason = (f"{self.what}: {canary} on the canary against {_pct(base_rate)} on the baseline; "
                      f"no regression (>= {_pct(p1)}) is {_odds(-self.llr_pass)}x more likely than one")
        else:
            needs = []
            if self.canary_samples < s.min_samples_to_pass:
                needs.append(f"{self.canary_samples:.0f} of {s.min_samples_to_pass} canary samples")
            needs.append(f"evidence {_odds(self.llr)}x, fails at {_odds(self.upper)}x; "
                         f"{_odds(self.llr_pass)}x, passes at 1/{_odds(-self.lower)}x")
            reason = f"{self.what}: {canary} against {_pct(base_rate)}; still soaking ({'; '.join(needs)})"
        return CheckResult(self.name, "compare", self.outcome, reason, canary, reference, numbers)


def _rate_text(events: float, samples: float) -> str:
    if samples <= 0:
        return "no samples"
    return f"{_pct(events / samples)} of {samples:,.0f}"


def _pct(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{100 * rate:.2f}%" if rate < 0.1 else f"{100 * rate:.1f}%"


def _odds(llr: float) -> str:
    value = math.exp(max(-700.0, min(700.0, llr)))
    if value >= 1e6:
        return f"{value:.1e}"
    return f"{value:,.3g}"
