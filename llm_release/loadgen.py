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


@dataclass
class Response:
    at: float  # when the answer arrived (time.time())
    status: int | str  # HTTP status, or "connection-error"
    version: str | None  # the version that answered (200 only)
    latency_ms: float | None


class SteadyLoad:
    """Generate requests at a steady rate in the background until stopped, keeping every answer.

    For canary analysis on our own stack: the judge needs traffic that flows while it watches,
    and a benchmark needs to know when each answer came and from which version.
    """

    def __init__(self, url: str, *, rate_per_s: float, concurrency: int = 4, max_tokens: int = 4,
                 prompt: str = "The release", timeout_s: float = 30.0, headers: dict | None = None):
        if rate_per_s <= 0 or concurrency < 1:
            raise ValueError("rate_per_s must be positive and concurrency at least 1")
        self.url, self.rate_per_s, self.concurrency = url, rate_per_s, concurrency
        self.max_tokens, self.prompt, self.timeout_s, self.headers = max_tokens, prompt, timeout_s, headers
        self.responses: list[Response] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "SteadyLoad":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        counter = iter(range(10**12))
        ticket = threading.Lock()

        def worker():
            session = requests.Session()
            while not self._stop.is_set():
                with ticket:
                    i = next(counter)
                due = started + i / self.rate_per_s
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                self._send(session, i)
            session.close()

        self._threads = [threading.Thread(target=worker, daemon=True, name=f"load-{n}")
                         for n in range(self.concurrency)]
        for thread in self._threads:
            thread.start()

    def _send(self, session: requests.Session, i: int) -> None:
        began = time.perf_counter()
        version = None
        try:
            resp = session.post(self.url, json={"text_input": f"{self.prompt} {i}", "max_tokens": self.max_tokens},
                                headers=self.headers, timeout=self.timeout_s)
            status = resp.status_code
            if status == 200:
                version = str(resp.json().get("model_version"))
        except requests.RequestException:
            status = "connection-error"
        latency = (time.perf_counter() - began) * 1000
        with self._lock:
            self.responses.append(Response(time.time(), status, version, latency))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 1)

    def snapshot(self) -> list[Response]:
        with self._lock:
            return list(self.responses)
