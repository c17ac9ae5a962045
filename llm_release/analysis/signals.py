"""The canary judge's gateway signals: per-interval counts from Envoy's per-cluster counters.

Every version has its own Envoy cluster (`<model>_v<N>`, see llm_release.routing.envoy), so the
gateway counts requests, error responses and latency per version, including errors Triton
returns inside a response and errors Envoy makes itself (a candidate that refuses
connections answers 503 from Envoy, and Triton never sees the request).

Read from Prometheus with one range query per metric family over [start - step, end], the
raw counter sampled at every interval boundary, and turned into per-interval increases here
(not with rate() or increase(), which extrapolate and would turn 3 requests into 3.4):

- requests: `envoy_cluster_upstream_rq_total`;
- 5xx and 4xx: `envoy_cluster_upstream_rq_xx`, `envoy_response_code_class` "5" and "4";
- latency: `envoy_cluster_upstream_rq_time_bucket` (milliseconds, `le` bounds), one
  Histogram per interval from the bucket increases.

Per series and interval boundary the value is the latest sample at or before it (Prometheus'
lookback); an interval's increase is the counter's change across it, with resets counted as
in `counter_increase` (a restarted Envoy counts from 0 again). Where a series was missing at
the previous boundary and has come back, the increase since its last value in the window is
credited to the interval it came back in.

No data is None, never zero:
- a version is None in an interval when its cluster has no `rq_total` series at the
  interval's end (never routed, removed, or not scraped); `problem` says which;
- Envoy creates a cluster's request total when the cluster is added (0), but its response
  class series and latency histogram only at the first such response: a missing 5xx/4xx
  series is zero when the cluster has a request total, a missing histogram is no latency
  data (None); a series that first appears inside the window counts from 0 (all of its
  value is new), and so does a cluster added inside the window;
- when Prometheus cannot be read, every interval has both versions None and `problem` set:
  `intervals()` never raises for that, so the judge answers INCONCLUSIVE.

Caveats, by construction of Envoy's counters:
- a request is counted when it is sent upstream and its error when the response ends, and a
  request Envoy fails before any upstream stream exists (connection refused, no healthy
  host) is counted in the 5xx class but not in `rq_total`: an interval is credited with at
  least as many requests as errors, so an unreachable canary reads as a 100% error rate;
- Envoy's histograms are merged at its stats flush (every second on the local stack) while
  counters are read live: an interval's latency total can trail its request count by up to
  a flush, and over a window they agree once `end` is a flush and a scrape in the past;
- a series missing at both the point before the window and its start, and present later,
  counts from 0: right for a new cluster or a restarted Envoy, too much if Prometheus simply
  could not scrape a long-running Envoy at both points.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from llm_release.analysis.samples import Histogram, Interval, VersionCounts
from llm_release.errors import MetricsError
from llm_release.metrics.prometheus import PrometheusClient, Series, counter_increase
from llm_release.routing.envoy import cluster_name

REQUESTS = "envoy_cluster_upstream_rq_total"
RESPONSES = "envoy_cluster_upstream_rq_xx"
LATENCY = "envoy_cluster_upstream_rq_time_bucket"
CLUSTER_LABEL = "envoy_cluster_name"
CLASS_LABEL = "envoy_response_code_class"


def _regex(names: list[str]) -> str:
    """A PromQL string literal's content matching exactly these names (RE2, anchored)."""
    return "|".join(re.sub(r"([^A-Za-z0-9_])", r"\\\\\1", n) for n in names)


class GatewaySignals:
    """Per-interval canary and baseline counts from the gateway's per-version clusters.

    :param canary: the candidate version; its primary cluster `<model>_v<canary>`, or with
        `shadow=True` the cluster its mirrored copies are counted on, `<model>_v<canary>_shadow`.
    :param baseline: the stable version; always its primary cluster `<model>_v<baseline>`
        (in a mirror, the requests whose copies the canary answers).
    """

    def __init__(self, client: PrometheusClient, model: str, canary: int, baseline: int, *, shadow: bool = False):
        if canary == baseline and not shadow:
            raise ValueError(f"canary and baseline are the same version ({canary}) and cluster")
        self.client = client
        self.model = model
        self.canary = canary
        self.baseline = baseline
        self.shadow = shadow
        self.canary_cluster = cluster_name(model, canary, shadow=shadow)
        self.baseline_cluster = cluster_name(model, baseline)

    def promql(self) -> dict[str, str]:
        """The range queries behind `intervals()`, by metric family."""
        clusters = _regex([self.canary_cluster, self.baseline_cluster])
        return {
            "requests": f'{REQUESTS}{{{CLUSTER_LABEL}=~"{clusters}"}}',
            "errors": f'{RESPONSES}{{{CLUSTER_LABEL}=~"{clusters}",{CLASS_LABEL}=~"4|5"}}',
            "latency": f'{LATENCY}{{{CLUSTER_LABEL}=~"{clusters}"}}',
        }

    def intervals(self, start: float, end: float, step_s: float) -> list[Interval]:
        """Whole intervals [start + k*step, start + (k+1)*step) up to `end`, in time order.

        A trailing part shorter than a step is left out (the next call covers it). `step_s`
        is used to the millisecond. For complete counts, `end` should lie a stats flush and a
        scrape in the past (about 2 s on the local stack; flush + scrape interval elsewhere).
        """
        step_ms = round(step_s * 1000)
        if step_ms <= 0:
            raise ValueError(f"step_s must be at least a millisecond, got {step_s!r}")
        step = step_ms / 1000
        n = math.floor((end - start) / step + 1e-9)
        if n < 1:
            return []
        bounds = [start + k * step for k in range(n + 1)]
        # Grid point 0 is one step before the window; point j >= 1 is bounds[j - 1].
        first = start - step
        try:
            families = {name: self.client.query_range(q, first, first + (n + 1) * step, step)
                        for name, q in self.promql().items()}
        except MetricsError as exc:
            problem = f"Prometheus could not be read: {exc}"
            return [Interval(a, b, None, None, problem=problem) for a, b in zip(bounds, bounds[1:])]
        grid = _Grid(first, step, n + 2)
        requests = grid.increases(families["requests"])
        errors = grid.increases(families["errors"])
        latency = grid.increases(families["latency"])
        out = []
        for k in range(n):
            j = k + 2  # the grid point at the end of interval k
            problems = []
            counts = {}
            for role, cluster in (("canary", self.canary_cluster), ("baseline", self.baseline_cluster)):
                counts[role], problem = _version_counts(cluster, j, requests, errors, latency)
                if problem:
                    problems.append(f"{role}: {problem}")
            out.append(Interval(bounds[k], bounds[k + 1], counts["canary"], counts["baseline"],
                                problem="; ".join(problems) or None))
        return out


class _Grid:
    """Evaluation points first, first + step, ...: samples mapped onto them, increases per point."""

    def __init__(self, first: float, step: float, points: int):
        self.first, self.step, self.points = first, step, points

    def index(self, t: float) -> int | None:
        j = round((t - self.first) / self.step)
        return j if 0 <= j < self.points and abs(self.first + j * self.step - t) < self.step / 2 else None

    def increases(self, series: list[Series]) -> list[tuple[dict, list[float | None]]]:
        """Per series: (labels, increase up to each grid point, None where it had no sample)."""
        out = []
        for s in series:
            values: dict[int, float] = {}
            for t, v in s.points:
                j = self.index(t)
                if j is not None and math.isfinite(v):
                    values[j] = v
            inc: list[float | None] = [None] * self.points
            last = None
            for j in range(self.points):
                if j not in values:
                    continue
                v = values[j]
                # First sample in the window: at point 0 it is the baseline; later the series
                # was created inside the window, so all of its value is new.
                if last is None:
                    inc[j] = 0.0 if j == 0 else counter_increase([(j, v)], from_zero=True)
                else:
                    inc[j] = counter_increase([(0, last), (1, v)])
                last = v
            out.append((s.labels, inc))
        return out


def _version_counts(cluster: str, j: int, requests, errors, latency) -> tuple[VersionCounts | None, str | None]:
    """One version's counts in the interval ending at grid point j, or None and why."""
    totals = [inc[j] for labels, inc in requests if labels.get(CLUSTER_LABEL) == cluster and inc[j] is not None]
    if not totals:
        return None, f"no {REQUESTS} series for cluster {cluster} (not routed, or not scraped)"
    by_class: dict[str, float] = defaultdict(float)
    for labels, inc in errors:
        if labels.get(CLUSTER_LABEL) == cluster and inc[j] is not None:
            by_class[labels.get(CLASS_LABEL, "")] += inc[j]
    by_bound: dict[float, float] = defaultdict(float)
    for labels, inc in latency:
        if labels.get(CLUSTER_LABEL) == cluster and inc[j] is not None:
            try:
                by_bound[float(labels["le"])] += inc[j]
            except (KeyError, ValueError):
                continue
    e5, e4 = by_class["5"], by_class["4"]
    # Errors Envoy makes before any upstream stream exists are not in rq_total (see above).
    total = max(sum(totals), e5 + e4)
    hist = Histogram.from_cumulative(dict(by_bound)) if by_bound else None
    return VersionCounts(total, e5, e4, hist), None
