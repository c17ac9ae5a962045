"""What the canary judge is fed: counts per version and interval, never rates or averages.

Counts, not rates, because the judge's tests are on counts (an error rate of 2% means
something different over 50 requests and over 50,000), and because the same types are filled
from Prometheus in production and from a simulator in tests and benchmarks.

No data is `None`, never zero: a version whose gateway cluster has no series, or an interval
in which Prometheus could not be read, must not look like a version that served nothing and
failed nothing.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

INF = math.inf

# Upper bounds (ms) for latencies we measure ourselves (the streaming probe's time to first
# token and inter-token latency), where no histogram is given: fine where LLM serving lives
# (tens of ms to tens of seconds), with +Inf last as in Prometheus.
DEFAULT_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000,
    7500, 10000, 15000, 30000, 60000, INF)


@dataclass(frozen=True)
class Histogram:
    """A latency histogram for one interval: cumulative counts at ascending upper bounds.

    Bounds end with +Inf, as Prometheus' `le` labels do, so `counts[-1]` is the total.
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self):
        if len(self.bounds) != len(self.counts) or not self.bounds:
            raise ValueError("a histogram needs one cumulative count per bound")
        if self.bounds[-1] != INF:
            raise ValueError("the last bound of a histogram must be +Inf")
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:])):
            raise ValueError(f"histogram bounds must ascend strictly: {self.bounds}")
        if any(c < 0 or math.isnan(c) for c in self.counts):
            raise ValueError(f"histogram counts must be non-negative numbers: {self.counts}")

    @classmethod
    def from_cumulative(cls, by_bound: dict[float, float]) -> "Histogram":
        """From Prometheus-style `le -> cumulative count`; a missing +Inf bucket is the max count."""
        items = sorted((float(b), float(c)) for b, c in by_bound.items())
        if not items or items[-1][0] != INF:
            items.append((INF, max((c for _, c in items), default=0.0)))
        bounds = tuple(b for b, _ in items)
        # Cumulative counts never fall with the bound; enforce that against scrape skew
        # between bucket series (each is its own series, read at its own instant).
        counts, running = [], 0.0
        for _, c in items:
            running = max(running, c)
            counts.append(running)
        return cls(bounds, tuple(counts))

    @classmethod
    def from_values(cls, values, bounds: tuple[float, ...] = DEFAULT_BOUNDS_MS) -> "Histogram":
        ordered = sorted(values)
        return cls(tuple(bounds), tuple(float(_count_le(ordered, b)) for b in bounds))

    @classmethod
    def empty(cls, bounds: tuple[float, ...] = DEFAULT_BOUNDS_MS) -> "Histogram":
        return cls(tuple(bounds), tuple(0.0 for _ in bounds))

    @property
    def total(self) -> float:
        return self.counts[-1]

    def count_above(self, bound: float) -> float:
        """Observations greater than `bound`, which must be one of the bounds."""
        return self.total - self.counts[self.bounds.index(bound)]

    def merged(self, other: "Histogram | None") -> "Histogram":
        """The sum of two histograms; other bounds are mapped onto ours (rounding up)."""
        if other is None:
            return self
        if other.bounds == self.bounds:
            return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts)))
        return Histogram(self.bounds, tuple(a + other.cumulative_at(b) for a, b in zip(self.counts, self.bounds)))

    def cumulative_at(self, bound: float) -> float:
        """Observations known to be <= bound (the largest of our bounds not above it)."""
        i = bisect_left(self.bounds, bound)
        if i < len(self.bounds) and self.bounds[i] == bound:
            return self.counts[i]
        return self.counts[i - 1] if i > 0 else 0.0

    def fraction_at_or_below(self, value: float) -> float | None:
        """Share of observations <= value, linear within a bucket (as histogram_quantile assumes).

        Beyond the largest finite bound nothing more is known: the share at that bound.
        """
        if self.total <= 0:
            return None
        i = bisect_left(self.bounds, value)
        if i >= len(self.bounds) or self.bounds[i] == INF:
            return self.counts[-2] / self.total if len(self.bounds) > 1 else 0.0
        lower = self.bounds[i - 1] if i > 0 else 0.0
        below = self.counts[i - 1] if i > 0 else 0.0
        width = self.bounds[i] - lower
        share = (value - lower) / width if width > 0 else 1.0
        return (below + (self.counts[i] - below) * max(0.0, min(1.0, share))) / self.total

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear within the bucket; None without observations.

        A quantile in the +Inf bucket is reported as the largest finite bound (as Prometheus
        does), so it reads as "at least this".
        """
        if not 0 <= q <= 1:
            raise ValueError("q must be within [0, 1]")
        if self.total <= 0:
            return None
        rank = q * self.total
        i = bisect_left(self.counts, rank)
        i = min(i, len(self.bounds) - 1)
        if self.bounds[i] == INF:
            return self.bounds[-2] if len(self.bounds) > 1 else None
        lower = self.bounds[i - 1] if i > 0 else 0.0
        below = self.counts[i - 1] if i > 0 else 0.0
        in_bucket = self.counts[i] - below
        if in_bucket <= 0:
            return self.bounds[i]
        return lower + (self.bounds[i] - lower) * (rank - below) / in_bucket

    def edge_for(self, q: float) -> float | None:
        """The smallest finite bound with at least a fraction q of observations at or below it.

        The judge's latency tests compare the share of requests above this edge; using a
        bucket bound for both versions handles ties (many requests in one bucket) exactly.
        """
        if self.total <= 0:
            return None
        finite = [(b, c) for b, c in zip(self.bounds, self.counts) if b != INF]
        for bound, count in finite:
            if count >= q * self.total:
                return bound
        return finite[-1][0] if finite else None

    def to_dict(self) -> dict:
        return {"bounds": [_bound_text(b) for b in self.bounds], "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, doc: dict) -> "Histogram":
        return cls(tuple(float(b) for b in doc["bounds"]), tuple(float(c) for c in doc["counts"]))


def _count_le(ordered: list[float], bound: float) -> int:
    lo, hi = 0, len(ordered)
    while lo < hi:
        mid = (lo + hi) // 2
        if ordered[mid] <= bound:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _bound_text(bound: float) -> str | float:
    return "+Inf" if bound == INF else bound


@dataclass(frozen=True)
class VersionCounts:
    """What one version's gateway cluster saw in one interval (deltas of counters)."""

    requests: float
    errors_5xx: float = 0.0
    errors_4xx: float = 0.0
    latency_ms: Histogram | None = None  # None: no latency data (not "no latency")

    def __post_init__(self):
        for name in ("requests", "errors_5xx", "errors_4xx"):
            value = getattr(self, name)
            if value is None or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative count, got {value!r}")
        if self.errors_5xx + self.errors_4xx > self.requests + 1e-9:
            raise ValueError(f"more errors ({self.errors_5xx} 5xx + {self.errors_4xx} 4xx) "
                             f"than requests ({self.requests})")

    def to_dict(self) -> dict:
        return {"requests": self.requests, "errors_5xx": self.errors_5xx, "errors_4xx": self.errors_4xx,
                "latency_ms": self.latency_ms.to_dict() if self.latency_ms else None}

    @classmethod
    def from_dict(cls, doc: dict) -> "VersionCounts":
        hist = doc.get("latency_ms")
        return cls(doc["requests"], doc.get("errors_5xx", 0.0), doc.get("errors_4xx", 0.0),
                   Histogram.from_dict(hist) if hist else None)


@dataclass(frozen=True)
class ProbeResult:
    """One streaming request sent by the probe through a version's pinned gateway path."""

    ok: bool
    ttft_ms: float | None = None  # time to first token
    itl_ms: tuple[float, ...] = ()  # gaps between consecutive tokens
    error: str | None = None  # why it failed (status code, timeout, bad stream)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "ttft_ms": self.ttft_ms, "itl_ms": list(self.itl_ms), "error": self.error}

    @classmethod
    def from_dict(cls, doc: dict) -> "ProbeResult":
        return cls(bool(doc["ok"]), doc.get("ttft_ms"), tuple(doc.get("itl_ms") or ()), doc.get("error"))


@dataclass(frozen=True)
class Health:
    """The candidate's runtime health at the end of an interval; None where not measured."""

    ready: bool | None = None  # READY in Triton (every replica, where there are several)
    restarts: float | None = None  # pod restarts during the interval (Kubernetes runtimes)
    gpu_free_fraction: float | None = None  # GPU memory headroom, worst GPU (GPU runtimes)

    def to_dict(self) -> dict:
        return {"ready": self.ready, "restarts": self.restarts, "gpu_free_fraction": self.gpu_free_fraction}

    @classmethod
    def from_dict(cls, doc: dict) -> "Health":
        return cls(doc.get("ready"), doc.get("restarts"), doc.get("gpu_free_fraction"))


@dataclass(frozen=True)
class Interval:
    """One look at the canary and the baseline over [start, end) (seconds since the epoch).

    `canary`/`baseline` are None when there is no data for that version (no series, or the
    metrics could not be read: then `problem` says why). Probe results are in send order.
    """

    start: float
    end: float
    canary: VersionCounts | None
    baseline: VersionCounts | None
    canary_probes: tuple[ProbeResult, ...] = ()
    baseline_probes: tuple[ProbeResult, ...] = ()
    health: Health = field(default_factory=Health)
    problem: str | None = None

    def __post_init__(self):
        if not self.end > self.start:
            raise ValueError(f"an interval must end after it starts ({self.start} .. {self.end})")

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end,
                "canary": self.canary.to_dict() if self.canary else None,
                "baseline": self.baseline.to_dict() if self.baseline else None,
                "canary_probes": [p.to_dict() for p in self.canary_probes],
                "baseline_probes": [p.to_dict() for p in self.baseline_probes],
                "health": self.health.to_dict(), "problem": self.problem}

    @classmethod
    def from_dict(cls, doc: dict) -> "Interval":
        return cls(doc["start"], doc["end"],
                   VersionCounts.from_dict(doc["canary"]) if doc.get("canary") else None,
                   VersionCounts.from_dict(doc["baseline"]) if doc.get("baseline") else None,
                   tuple(ProbeResult.from_dict(p) for p in doc.get("canary_probes") or ()),
                   tuple(ProbeResult.from_dict(p) for p in doc.get("baseline_probes") or ()),
                   Health.from_dict(doc.get("health") or {}), doc.get("problem"))
