"""Simulated canaries: interval counts drawn the way a gateway would count them.

For the judge's unit tests and the decision-quality benchmark: the same Interval objects the
judge gets from Prometheus in production, drawn from known truths (request rates, error rates,
latency distributions, a fault that starts after some time), so its verdicts can be scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_release.analysis.samples import Health, Histogram, Interval, VersionCounts

# Envoy's default histogram bounds for upstream_rq_time (ms), as it exports them.
ENVOY_BOUNDS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                   600000, 1800000, 3600000, float("inf"))


@dataclass(frozen=True)
class VersionTruth:
    """How one version behaves: requests per minute, error shares, latency (lognormal)."""

    requests_per_min: float
    error_5xx: float = 0.0
    error_4xx: float = 0.0
    latency_median_ms: float = 200.0
    latency_sigma: float = 0.5  # of log latency: 0.5 puts p95 at about 2.3x the median

    def draw(self, rng: np.random.Generator, seconds: float) -> VersionCounts:
        n = int(rng.poisson(self.requests_per_min * seconds / 60.0))
        e5 = int(rng.binomial(n, self.error_5xx)) if n else 0
        e4 = int(rng.binomial(n - e5, self.error_4xx / max(1e-12, 1 - self.error_5xx))) if n - e5 else 0
        latencies = rng.lognormal(np.log(self.latency_median_ms), self.latency_sigma, size=n)
        counts = np.searchsorted(np.sort(latencies), np.array(ENVOY_BOUNDS_MS), side="right")
        return VersionCounts(float(n), float(e5), float(e4), Histogram(ENVOY_BOUNDS_MS, tuple(float(c) for c in counts)))


@dataclass(frozen=True)
class Scenario:
    canary: VersionTruth
    baseline: VersionTruth
    faulty_canary: VersionTruth | None = None  # how the canary behaves from onset_s on
    onset_s: float = 0.0
    interval_s: float = 10.0

    def intervals(self, rng: np.random.Generator, *, seconds: float, start: float = 1_700_000_000.0):
        """Yield consecutive intervals covering `seconds`."""
        t = 0.0
        while t < seconds - 1e-9:
            truth = self.faulty_canary if self.faulty_canary is not None and t >= self.onset_s else self.canary
            yield Interval(start + t, start + t + self.interval_s, truth.draw(rng, self.interval_s),
                           self.baseline.draw(rng, self.interval_s), health=Health(ready=True))
            t += self.interval_s


#: Checks a simulation cannot feed (no streaming probe, no GPU): off, with the reason.
SIMULATION_DISABLED = {
    "probe_failures": "simulated traffic: no streaming probe",
    "compare_ttft_p50": "simulated traffic: no streaming probe",
    "compare_itl_p50": "simulated traffic: no streaming probe",
    "gpu_headroom": "simulated traffic: no GPU",
}
