"""Prometheus HTTP API on prometheus-api-client: instant and range queries, counter arithmetic.

No data is reported as an empty result, never as zero: a gate that reads "no samples" as a
pass is the classic silent failure of canary systems. NaN samples (`0/0`, a quantile without
observations) are no data too, and are dropped.

Errors are `MetricsError`, always naming the Prometheus URL:
- unreachable (connection refused, DNS, timeout) or a 5xx: transient, worth retrying later;
- a query Prometheus refuses (400 bad_data, 422 execution error): permanent, with
  Prometheus' own error text, since the same query will fail the same way.

`PrometheusConnect` retries three times with a one-second backoff by default, which would
hold a canary verdict for seconds while Prometheus is down; this client makes one attempt per
call, so a failure comes back within the request timeout and the caller decides what to do
(the canary judge reads "no data" for that interval).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, NamedTuple

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from llm_release.errors import MetricsError, is_permanent

# One attempt, no backoff, no retry on any status: see the module docstring.
NO_RETRY = Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0, backoff_factor=0,
                 status_forcelist=(), raise_on_status=False)


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Series(NamedTuple):
    """One series of a range query: its labels and its (unix time, value) points, NaN dropped."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def counter_increase(points: Iterable[tuple[float, float]], *, from_zero: bool = False) -> float:
    """How much a counter grew over its samples, counting resets: never negative.

    `points` are (time, value) samples of one counter series (any order; they are sorted by
    time). Between consecutive samples the increase is `after - before`, unless the counter
    dropped: a restarted Envoy or Triton counts from 0 again, so the increase over a reset is
    the value after it. The result is the sum over consecutive pairs, so a series
    `10, 15, 3, 7` increased by 5 + 3 + 4 = 12. This is Prometheus' `increase()` without its
    extrapolation to the window's edges: the figure is what the samples show, a whole number
    for a counter of events, and never more than the values the samples hold.

    `from_zero=True` counts the first sample from 0 too: for a series created inside the
    window (Envoy creates a cluster's counters when the cluster is added, and its response
    class counters at the first response of that class), whose first value is all increase.

    NaN and infinite samples are skipped; so are negative ones (no counter is negative).
    An empty or single-sample series increased by 0 (by the sample, with `from_zero`).
    """
    total = 0.0
    previous = 0.0 if from_zero else None
    for _, value in sorted(points, key=lambda p: p[0]):
        if value is None or not math.isfinite(value) or value < 0:
            continue
        if previous is not None:
            total += value - previous if value >= previous else value
        previous = value
    return total


def _unix(at: float | datetime) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


def _number(text) -> float:
    return float(text)  # Prometheus sends sample values as strings: "1", "NaN", "+Inf"


class PrometheusClient:
    """Queries one Prometheus: `base_url` such as http://127.0.0.1:9090 (no /api/v1)."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        # Any HTTP error answer raises here, with the response attached, before
        # PrometheusConnect folds it into a message string: the status and Prometheus' JSON
        # error stay readable.
        self._session.hooks["response"].append(lambda resp, *args, **kwargs: resp.raise_for_status())
        self._prom = PrometheusConnect(self.base_url, retry=NO_RETRY, session=self._session, timeout=timeout_s)

    def close(self) -> None:
        self._session.close()

    def is_online(self) -> bool:
        """Prometheus answers ready (it has loaded its data and serves queries)."""
        try:
            self._session.get(f"{self.base_url}/-/ready", timeout=min(3.0, self.timeout_s))
        except requests.RequestException:
            return False
        return True

    # -- queries ----------------------------------------------------------------------------
    def query(self, promql: str) -> list[Sample]:
        """An instant query, evaluated now: one Sample per series, or one unlabelled Sample for
        a scalar result (`time()`, `scalar(...)`). NaN samples are dropped (no data is not a
        number). A range-vector expression is refused (use query_range)."""
        result = self._call(promql, lambda: self._prom.custom_query(promql))
        # custom_query returns data["result"] alone, without resultType: a scalar (or string)
        # result is the pair [time, "value"], a vector is a list of {"metric", "value"} objects.
        if len(result) == 2 and not isinstance(result[0], dict):
            try:
                value = _number(result[1])
            except (TypeError, ValueError) as exc:
                raise MetricsError(f"query {promql!r} on Prometheus at {self.base_url} returned "
                                   f"{result[1]!r}, not a number", permanent=True) from exc
            return [] if math.isnan(value) else [Sample({}, value)]
        if any("value" not in item for item in result):
            raise MetricsError(f"query {promql!r} on Prometheus at {self.base_url} returned a range vector; "
                               "use query_range for it", permanent=True)
        samples = [Sample(item["metric"], _number(item["value"][1])) for item in result]
        return [sample for sample in samples if not math.isnan(sample.value)]

    def query_range(self, promql: str, start: float | datetime, end: float | datetime,
                    step_s: float) -> list[Series]:
        """A range query: the expression evaluated at start, start + step, ... up to end.

        `start`/`end` are unix seconds (or datetimes), kept to the millisecond. Each point is
        what an instant query at that time would return (the latest sample at or before it,
        up to Prometheus' 5-minute lookback unless the series was marked stale). NaN points
        are dropped, and a series left without points is dropped with them.
        """
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        t0, t1 = _unix(start), _unix(end)
        if t1 < t0:
            raise ValueError(f"a range query must end after it starts ({t0} .. {t1})")
        # custom_query_range rounds start and end to whole seconds; the params it passes
        # through override them with millisecond precision.
        params = {"start": f"{t0:.3f}", "end": f"{t1:.3f}", "step": str(round(step_s, 3))}
        result = self._call(promql, lambda: self._prom.custom_query_range(
            promql, datetime.fromtimestamp(t0, timezone.utc), datetime.fromtimestamp(t1, timezone.utc),
            params["step"], params=params))
        series = []
        for item in result:
            points = [(float(t), v) for t, text in item.get("values", []) if not math.isnan(v := _number(text))]
            if points:
                series.append(Series(item.get("metric", {}), points))
        return series

    def values_by(self, promql: str, label: str) -> dict[str, float]:
        """label value -> sample value (NaN samples are dropped by query: no data is not a number)."""
        return {s.labels.get(label, ""): s.value for s in self.query(promql)}

    def wait_for(self, promql: str, predicate, *, timeout_s: float = 30.0, interval_s: float = 0.5) -> list[Sample]:
        """Poll until predicate(samples) holds; return the samples (raise on timeout)."""
        deadline = time.monotonic() + timeout_s
        samples: list[Sample] = []
        while time.monotonic() < deadline:
            samples = self.query(promql)
            if predicate(samples):
                return samples
            time.sleep(interval_s)
        raise MetricsError(f"{promql!r} did not reach the expected value in {timeout_s:.0f} s; last: {samples}")

    # -- errors -----------------------------------------------------------------------------
    def _call(self, promql: str, call):
        try:
            result = call()
        except requests.HTTPError as exc:
            raise self._refused(promql, exc) from exc
        except requests.JSONDecodeError as exc:
            raise MetricsError(f"{self.base_url} did not answer like a Prometheus (no JSON: {exc}); "
                               "check the URL", permanent=True) from exc
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus at {self.base_url} unreachable: {_cause(exc)}") from exc
        except PrometheusApiClientException as exc:  # a 2xx other than 200
            raise MetricsError(f"Prometheus at {self.base_url} answered {promql!r} unexpectedly: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise MetricsError(f"{self.base_url} did not answer like a Prometheus ({exc!r}); check the URL",
                               permanent=True) from exc
        if not isinstance(result, list):
            raise MetricsError(f"{self.base_url} answered {promql!r} with {result!r}, not a query result",
                               permanent=True)
        return result

    def _refused(self, promql: str, exc: requests.HTTPError) -> MetricsError:
        resp = exc.response
        try:
            body = resp.json()
            detail = f"{body.get('errorType', '')}: {body['error']}".lstrip(": ")
        except (ValueError, KeyError, AttributeError, TypeError):
            detail = resp.text[:300].strip() if resp is not None else str(exc)
        status = resp.status_code if resp is not None else None
        if status in (400, 422):
            return MetricsError(f"Prometheus at {self.base_url} refused query {promql!r} ({status}): {detail}",
                                permanent=True)
        return MetricsError(f"Prometheus at {self.base_url} answered {status} to {promql!r}: {detail}",
                            permanent=is_permanent(exc))


def _cause(exc: requests.RequestException) -> str:
    """The innermost reason of a requests/urllib3 error ("Connection refused", "Read timed out"),
    without urllib3's "Max retries exceeded" wrapper (this client does not retry)."""
    reason: BaseException = exc
    for _ in range(5):
        inner = getattr(reason, "reason", None)
        if inner is None and reason.args and isinstance(reason.args[0], BaseException):
            inner = reason.args[0]
        if not isinstance(inner, BaseException):
            break
        reason = inner
    return str(reason)
