"""A bounded HTTP load generator for generate requests, counting which version answered.

Bounded in count and time; only for servers of our own on this host or in a test cluster.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests


@dataclass
class LoadResult:
    sent: int
    by_version: Counter = field(default_factory=Counter)
    status_codes: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.status_codes.items() if code != 200)

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def send_generate_requests(url: str, *, count: int, concurrency: int = 4, prompt: str = "The release",
                           max_tokens: int = 4, timeout_s: float = 30.0, headers: dict | None = None) -> LoadResult:
    """POST `count` generate requests to `url` (a /v2/models/<m>/generate URL)."""
    result = LoadResult(sent=count)
    local = threading.local()

    def one(i: int):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        try:
            resp = session.post(url, json={"text_input": f"{prompt} {i}", "max_tokens": max_tokens},
                                headers=headers, timeout=timeout_s)
        except requests.RequestException:
            return "connection-error", None, None
        latency = (time.perf_counter() - started) * 1000
        version = None
        if resp.status_code == 200:
            version = str(resp.json().get("model_version"))
        return resp.status_code, version, latency

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for code, version, latency in pool.map(one, range(count)):
            result.status_codes[code] += 1
            if version is not None:
                result.by_version[version] += 1
            if latency is not None:
                result.latencies_ms.append(latency)
    result.elapsed_s = time.perf_counter() - started
    return result
