"""The perf bench: streaming load on one engine version, measured as users feel it.

Each request streams over Triton's gRPC `ModelStreamInfer`, the way TensorRT-LLM serving is
measured (perf_analyzer `--streaming`, genai-perf's default endpoint): the reference model is
decoupled like TensorRT-LLM's, so one response arrives per token, then an empty final one
(`enable_empty_final_response`). Times are time.perf_counter at the moment tritonclient's
stream thread hands a response over, so the time to first token includes the request upload.

Load is closed-loop at fixed concurrencies (C workers, each with its own gRPC stream, each
sending its next request when the last one ended), over a seeded mix of prompt and output
lengths: request i of a run is the same prompt and max_tokens for every version measured with
the same seed, so candidate and stable see identical work. Prompts are cut from the reference
corpus at seeded offsets, `chars_per_token` characters per token (1 for the byte-level
reference model, about 4 for English with a BPE tokenizer).

Per concurrency level: time to first token (TTFT), inter-token latency (ITL: a request's mean
gap between tokens, (last - first) / (tokens - 1), as genai-perf defines it), end-to-end
latency, each as mean/p50/p95/p99/max over the level's successful requests; output tokens/s
and requests/s over the level's wall time; errors and the error rate. A failed request
(an error response, a version that did not answer, a timeout) is counted, never raised.

`bench_pair` measures candidate and stable back to back at each level, alternating which goes
first, so the noise of this machine hits both; `llm_release.perf.report.compare` judges them.
No Airflow imports here.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from llm_release.errors import SpecError
from llm_release.quality.golden import TritonModelMap, pinned_model

CORPUS_PATH = Path(__file__).resolve().parents[1] / "engine" / "corpus" / "reference.txt"
DEFAULT_CONCURRENCIES = (1, 2, 4)
ERROR_SAMPLES = 3


# -- what to send ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixEntry:
    """One kind of request: prompt length and max_tokens (both in tokens), with a relative weight."""

    prompt_tokens: int
    max_tokens: int
    weight: float = 1.0


#: Mostly short chat turns, some long prompts with longer answers; fits the reference engines
#: of the tests (max_input_len 256, max_seq_len 512).
DEFAULT_MIX = (MixEntry(16, 16, 4), MixEntry(64, 32, 3), MixEntry(128, 48, 2), MixEntry(224, 64, 1))


def parse_mix(value: Iterable[Any] = DEFAULT_MIX, *, max_input_len: int | None = None,
              max_seq_len: int | None = None) -> tuple[MixEntry, ...]:
    """Validate a mix (MixEntry, {prompt_tokens, max_tokens, weight} or (p, m[, w]) items)
    against the engine's limits; errors name the item, e.g. `mix[2].max_tokens`."""
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise SpecError("mix", f"{value!r} is not a list of request kinds",
                        "write e.g. [{prompt_tokens: 16, max_tokens: 16, weight: 1}]")
    entries = []
    for i, item in enumerate(value):
        where = f"mix[{i}]"
        if isinstance(item, MixEntry):
            raw = asdict(item)
        elif isinstance(item, dict):
            unknown = sorted(set(item) - {"prompt_tokens", "max_tokens", "weight"})
            if unknown:
                raise SpecError(f"{where}.{unknown[0]}", "is not a known setting",
                                "known: prompt_tokens, max_tokens, weight")
            raw = dict(item)
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            raw = dict(zip(("prompt_tokens", "max_tokens", "weight"), item))
        else:
            raise SpecError(where, f"{item!r} is not a request kind", "write {prompt_tokens, max_tokens, weight}")
        for key in ("prompt_tokens", "max_tokens"):
            n = raw.get(key)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SpecError(f"{where}.{key}", f"{n!r} is not a positive integer", "give a number of tokens")
        weight = raw.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise SpecError(f"{where}.weight", f"{weight!r} is not a positive number", "write e.g. 1")
        if max_input_len is not None and raw["prompt_tokens"] > max_input_len:
            raise SpecError(f"{where}.prompt_tokens", f"{raw['prompt_tokens']} is over the engine's max_input_len "
                            f"{max_input_len}", "use shorter prompts for this engine")
        if max_seq_len is not None and raw["prompt_tokens"] + raw["max_tokens"] > max_seq_len:
            raise SpecError(f"{where}.max_tokens", f"{raw['prompt_tokens']} + {raw['max_tokens']} tokens is over the "
                            f"engine's max_seq_len {max_seq_len}", "ask for fewer tokens")
        entries.append(MixEntry(raw["prompt_tokens"], raw["max_tokens"], float(weight)))
    if not entries:
        raise SpecError("mix", "is empty", "give at least one request kind")
    return tuple(entries)


@dataclass(frozen=True)
class BenchRequest:
    index: int
    prompt: str
    prompt_tokens: int
    max_tokens: int


class RequestPlan:
    """Request i of a run, the same for every version benched with the same seed and mix."""

    def __init__(self, mix: tuple[MixEntry, ...], seed: int, *, chars_per_token: float = 1.0):
        self.mix, self.seed, self.chars_per_token = mix, seed, chars_per_token
        text = CORPUS_PATH.read_text(encoding="utf-8").encode("ascii", "replace").decode("ascii")
        self._corpus = " ".join(text.split())  # one line: prompts never begin mid-whitespace run
        self._weights = [e.weight for e in mix]

    def __call__(self, index: int) -> BenchRequest:
        rng = random.Random(f"{self.seed}:{index}")  # str seeds hash with sha512: stable across runs
        entry = rng.choices(self.mix, weights=self._weights)[0]
        chars = max(1, int(round(entry.prompt_tokens * self.chars_per_token)))
        start = rng.randrange(len(self._corpus))
        doubled = self._corpus * (chars // len(self._corpus) + 2)
        return BenchRequest(index, doubled[start:start + chars], entry.prompt_tokens, entry.max_tokens)


# -- what to reach -----------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchTarget:
    """One release version of a model on a Triton's gRPC endpoint (host:port).

    `triton_model` maps (model, release version) to the Triton (name, version) that serves it,
    e.g. llm_release.quality.golden.model_per_release() or Environment.triton_model.
    """

    grpc_url: str
    model: str
    version: int
    label: str | None = None
    triton_model: TritonModelMap | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None

    def served(self) -> tuple[str, int]:
        return pinned_model(self.model, self.version, self.triton_model)

    def describe(self) -> dict:
        name, version = self.served()
        return {"label": self.label or f"{self.model} v{self.version}", "model": self.model,
                "version": self.version, "triton_model": name, "triton_version": version,
                "grpc_url": self.grpc_url}


def _check_target(target: BenchTarget) -> None:
    host, _, port = str(target.grpc_url).rpartition(":")
    if not host or not port.isdigit() or "/" in target.grpc_url:
        raise SpecError("grpc_url", f"{target.grpc_url!r} is not host:port",
                        "give Triton's gRPC endpoint, e.g. 127.0.0.1:8001 (no scheme)")
    target.served()


# -- measuring ---------------------------------------------------------------------------------

@dataclass
class Sample:
    """One request as the client saw it."""

    ok: bool
    ttft_ms: float | None = None
    itl_ms: float | None = None  # mean gap between tokens; None with fewer than two tokens
    e2e_ms: float | None = None
    output_tokens: int = 0
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q: {q} is not in 0..100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict:
    """count, mean, p50, p95, p99, max (rounded to µs); None values when there is no data."""
    out = {"count": len(values)}
    if not values:
        return {**out, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    out["mean"] = round(sum(values) / len(values), 3)
    for q in (50, 95, 99):
        out[f"p{q}"] = round(percentile(values, q), 3)
    out["max"] = round(max(values), 3)
    return out


@dataclass
class LevelStats:
    concurrency: int
    requests: int
    errors: int
    error_rate: float | None
    wall_s: float
    requests_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    ttft_ms: dict
    itl_ms: dict
    e2e_ms: dict
    error_samples: list[str] = field(default_factory=list)

    @classmethod
    def from_samples(cls, concurrency: int, samples: list[Sample], wall_s: float) -> "LevelStats":
        ok = [s for s in samples if s.ok]
        errors = len(samples) - len(ok)
        tokens = sum(s.output_tokens for s in ok)
        seen: list[str] = []
        for s in samples:
            if s.error and s.error not in seen and len(seen) < ERROR_SAMPLES:
                seen.append(s.error)
        wall = max(wall_s, 1e-9)
        return cls(concurrency=concurrency, requests=len(samples), errors=errors,
                   error_rate=round(errors / len(samples), 4) if samples else None,
                   wall_s=round(wall_s, 3), requests_per_s=round(len(ok) / wall, 3), output_tokens=tokens,
                   output_tokens_per_s=round(tokens / wall, 2),
                   ttft_ms=summarize([s.ttft_ms for s in ok if s.ttft_ms is not None]),
                   itl_ms=summarize([s.itl_ms for s in ok if s.itl_ms is not None]),
                   e2e_ms=summarize([s.e2e_ms for s in ok if s.e2e_ms is not None]),
                   error_samples=seen)

    def metric(self, name: str) -> float | None:
        """A gateable figure by name: ttft_p95_ms, itl_p50_ms, e2e_p99_ms, output_tokens_per_s, ..."""
        if name in ("output_tokens_per_s", "requests_per_s", "error_rate"):
            return getattr(self, name)
        family, _, rest = name.partition("_")
        stat = rest.removesuffix("_ms")
        table = {"ttft": self.ttft_ms, "itl": self.itl_ms, "e2e": self.e2e_ms}.get(family)
        if table is None or stat not in table or stat == "count":
            raise KeyError(name)
        return table[stat]


@dataclass
class BenchResult:
    target: dict
    mix: list[dict]
    seed: int
    levels: list[LevelStats]
    started_at: str = ""

    def level(self, concurrency: int) -> LevelStats | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> "BenchResult":
        levels = [lv if isinstance(lv, LevelStats) else LevelStats(**lv) for lv in doc["levels"]]
        return cls(target=dict(doc["target"]), mix=list(doc["mix"]), seed=doc["seed"], levels=levels,
                   started_at=doc.get("started_at", ""))


class _StreamWorker:
    """One gRPC client and bidirectional stream, one request in flight at a time."""

    def __init__(self, url: str, name: str, version: int, timeout_s: float):
        import tritonclient.grpc as grpcclient  # heavy: imported when a bench runs

        self._grpc = grpcclient
        self.name, self.version, self.timeout_s = name, version, timeout_s
        self.client = grpcclient.InferenceServerClient(url)
        self._queue: queue.Queue = queue.Queue()
        self._last_error: str | None = None  # the stream's last error, for a send that finds it dead
        self._start_stream()

    def _start_stream(self) -> None:
        self._queue = queue.Queue()
        inbox = self._queue
        self.client.start_stream(callback=lambda result, error: inbox.put((time.perf_counter(), result, error)))

    def _inputs(self, prompt: str, max_tokens: int) -> list:
        import numpy as np

        g = self._grpc
        specs = (("text_input", np.array([[prompt.encode("utf-8")]], dtype=np.object_), "BYTES"),
                 ("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
                 ("stream", np.array([[True]], dtype=bool), "BOOL"))
        inputs = []
        for name, array, dtype in specs:
            tensor = g.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    def send(self, request_id: str, prompt: str, max_tokens: int) -> Sample:
        inputs = self._inputs(prompt, max_tokens)
        started = time.perf_counter()
        deadline = started + self.timeout_s
        arrivals: list[float] = []
        try:
            self.client.async_stream_infer(self.name, inputs, model_version=str(self.version),
                                           request_id=request_id, enable_empty_final_response=True)
        except Exception as exc:  # noqa: BLE001 - a dead stream is a failed request, and a new stream
            detail = self._stream_error() or self._last_error or str(exc)
            self._restart()
            return Sample(ok=False, error=_short(f"send failed: {detail}"))
        while True:
            try:
                arrived, result, error = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self._restart()  # late responses of this request must not reach the next one
                return Sample(ok=False, output_tokens=len(arrivals),
                              error=f"timed out after {self.timeout_s:g} s ({len(arrivals)} tokens)")
            if error is not None:
                self._last_error = str(error)
                return Sample(ok=False, output_tokens=len(arrivals), error=_short(str(error)))
            response = result.get_response()
            if response.id != request_id:
                continue  # a straggler of an earlier request on this stream
            if response.model_version and response.model_version != str(self.version):
                return Sample(ok=False, error=f"answered by version {response.model_version!r}, not {self.version}")
            text = result.as_numpy("text_output")
            if text is not None and text.size and any(bytes(t) for t in text.reshape(-1)):
                arrivals.append(arrived)
            if response.parameters["triton_final_response"].bool_param:
                break
        if not arrivals:
            return Sample(ok=False, error="stream ended without a token")
        ttft = (arrivals[0] - started) * 1000.0
        itl = (arrivals[-1] - arrivals[0]) * 1000.0 / (len(arrivals) - 1) if len(arrivals) > 1 else None
        return Sample(ok=True, ttft_ms=ttft, itl_ms=itl, e2e_ms=(arrivals[-1] - started) * 1000.0,
                      output_tokens=len(arrivals))

    def _stream_error(self) -> str | None:
        """Why the stream died: tritonclient hands that to the callback, not to the send."""
        found = None
        while True:
            try:
                _, _, error = self._queue.get_nowait()
            except queue.Empty:
                return found
            if error is not None:
                found = str(error)

    def _restart(self) -> None:
        try:
            self.client.stop_stream(cancel_requests=True)
        except Exception:  # noqa: BLE001 - the old stream is gone either way
            pass
        self._start_stream()

    def close(self) -> None:
        try:
            self.client.stop_stream(cancel_requests=True)
        finally:
            self.client.close()


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _check_load(concurrencies, requests_per_level, duration_s, timeout_s) -> tuple[int, ...]:
    levels = tuple(concurrencies)
    if not levels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in levels):
        raise SpecError("concurrencies", f"{list(levels)!r} is not a list of positive integers", "write e.g. [1, 2, 4]")
    if len(set(levels)) != len(levels):
        raise SpecError("concurrencies", f"{list(levels)!r} repeats a level", "list each concurrency once")
    if (requests_per_level is None) == (duration_s is None):
        raise SpecError("requests_per_level", "give either requests_per_level or duration_s",
                        "e.g. requests_per_level=20 (a count bounds the bench's time only through the server)")
    if requests_per_level is not None and (isinstance(requests_per_level, bool)
                                           or not isinstance(requests_per_level, int) or requests_per_level < 1):
        raise SpecError("requests_per_level", f"{requests_per_level!r} is not a positive integer", "write e.g. 20")
    for name, value in (("duration_s", duration_s), ("timeout_s", timeout_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise SpecError(name, f"{value!r} is not a positive number of seconds", "write e.g. 30")
    return levels


def measure_level(target: BenchTarget, concurrency: int, plan: Callable[[int], BenchRequest], *,
                  requests: int | None = None, duration_s: float | None = None, timeout_s: float = 60.0,
                  warmup: bool = True) -> LevelStats:
    """One closed-loop level: `concurrency` streams share requests 0..requests-1 of `plan`
    (or keep sending until `duration_s` has passed). Each stream is opened, and warmed with one
    small request when `warmup`, before the clock starts."""
    name, version = target.served()
    workers: list[_StreamWorker] = []
    samples: list[Sample] = []
    lock = threading.Lock()
    counter = iter(range(10 ** 12))
    try:
        for _ in range(concurrency):
            workers.append(_StreamWorker(target.grpc_url, name, version, timeout_s))
        if warmup:
            for w, worker in enumerate(workers):
                worker.send(f"warmup-{w}", "Warm up the stream.", 2)
        started = time.perf_counter()
        stop_at = None if duration_s is None else started + duration_s

        def loop(worker: _StreamWorker) -> None:
            while True:
                with lock:
                    index = next(counter)
                if (requests is not None and index >= requests) or (stop_at is not None and time.perf_counter() >= stop_at):
                    return
                req = plan(index)
                sample = worker.send(f"bench-{index}", req.prompt, req.max_tokens)
                with lock:
                    samples.append(sample)

        threads = [threading.Thread(target=loop, args=(w,), daemon=True, name=f"bench-c{concurrency}-{i}")
                   for i, w in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    finally:
        for worker in workers:
            try:
                worker.close()
            except Exception:  # noqa: BLE001 - closing a broken client must not hide the figures
                pass
    return LevelStats.from_samples(concurrency, samples, wall)


def run_bench(target: BenchTarget, *, concurrencies: Iterable[int] = DEFAULT_CONCURRENCIES,
              requests_per_level: int | None = None, duration_s: float | None = None,
              mix: Iterable[Any] = DEFAULT_MIX, seed: int = 0, timeout_s: float = 60.0,
              chars_per_token: float = 1.0) -> BenchResult:
    """Bench one version at each concurrency; give `requests_per_level` or `duration_s` (per level)."""
    levels = _check_load(concurrencies, requests_per_level, duration_s, timeout_s)
    _check_target(target)
    entries = parse_mix(mix, max_input_len=target.max_input_len, max_seq_len=target.max_seq_len)
    plan = RequestPlan(entries, seed, chars_per_token=chars_per_token)
    result = _empty_result(target, entries, seed)
    for c in levels:
        result.levels.append(measure_level(target, c, plan, requests=requests_per_level, duration_s=duration_s,
                                           timeout_s=timeout_s))
    return result


def bench_pair(candidate: BenchTarget, stable: BenchTarget, *,
               concurrencies: Iterable[int] = DEFAULT_CONCURRENCIES, requests_per_level: int | None = None,
               duration_s: float | None = None, mix: Iterable[Any] = DEFAULT_MIX, seed: int = 0,
               timeout_s: float = 60.0, chars_per_token: float = 1.0) -> tuple[BenchResult, BenchResult]:
    """Candidate and stable back to back at each level, the same requests for both, the order
    alternating per level (stable first at the 1st, 3rd, ... level) so drift hits both alike.
    The mix is checked against both engines' limits."""
    levels = _check_load(concurrencies, requests_per_level, duration_s, timeout_s)
    _check_target(candidate)
    _check_target(stable)
    entries = parse_mix(mix, max_input_len=_smallest(candidate.max_input_len, stable.max_input_len),
                        max_seq_len=_smallest(candidate.max_seq_len, stable.max_seq_len))
    plan = RequestPlan(entries, seed, chars_per_token=chars_per_token)
    results = {"candidate": _empty_result(candidate, entries, seed), "stable": _empty_result(stable, entries, seed)}
    targets = {"candidate": candidate, "stable": stable}
    for i, c in enumerate(levels):
        order = ("stable", "candidate") if i % 2 == 0 else ("candidate", "stable")
        for role in order:
            results[role].levels.append(measure_level(targets[role], c, plan, requests=requests_per_level,
                                                      duration_s=duration_s, timeout_s=timeout_s))
    for r in results.values():
        r.levels.sort(key=lambda lv: levels.index(lv.concurrency))
    return results["candidate"], results["stable"]


def _smallest(a: int | None, b: int | None) -> int | None:
    known = [x for x in (a, b) if x is not None]
    return min(known) if known else None


def _empty_result(target: BenchTarget, entries: tuple[MixEntry, ...], seed: int) -> BenchResult:
    return BenchResult(target=target.describe(), mix=[asdict(e) for e in entries], seed=seed, levels=[],
                       started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
