"""Prometheus HTTP API: instant queries returning labelled values.

No data is reported as an empty result, never as zero: a gate that reads "no samples" as a
pass is the classic silent failure of canary systems.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import requests

from llm_release.errors import MetricsError


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def is_online(self) -> bool:
        try:
            return requests.get(f"{self.base_url}/-/ready", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def query(self, promql: str) -> list[Sample]:
        try:
            resp = requests.get(f"{self.base_url}/api/v1/query", params={"query": promql}, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus at {self.base_url} unreachable: {exc}") from exc
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200 or body.get("status") != "success":
            raise MetricsError(f"query {promql!r} failed ({resp.status_code}): {body.get('error', resp.text[:200])}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def values_by(self, promql: str, label: str) -> dict[str, float]:
        """label value -> sample value, NaN samples dropped (no data is not a number)."""
        return {s.labels.get(label, ""): s.value for s in self.query(promql) if not math.isnan(s.value)}

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
