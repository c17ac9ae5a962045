"""The streaming probe: a few real token streams through a version's pinned gateway path.

Gateway counters give error rates and whole-request latency, but an LLM release can regress
where they do not look: the time to the first token and the pace of the tokens after it. The
probe measures both on the path users take (the gateway), pinned to one version
(`/v2/models/<m>/versions/<n>/generate_stream` always reaches version n, see
llm_release.routing.envoy), and turns every way a stream can go wrong into
`ProbeResult(ok=False, error=...)` rather than an exception, so the judge can weigh failed
probes like any other evidence.

Triton's generate_stream answers Server-Sent Events, one `data: {...}` line per model response.
The reference model (like TensorRT-LLM's ensemble with `stream: true`) sends one response per
token, each with a non-empty `text_output`, and then a final empty one that Triton does not
forward; so `max_tokens` tokens give one time to first token and `max_tokens - 1` gaps. An
error before the first token comes as HTTP 400 with `data: {"error": ...}`; an error after
streaming began comes as an `error` event inside a 200 stream.

Times are taken with time.perf_counter on arrival at the client: the TTFT includes the request
upload and the gateway, as a user would see it, and tokens that arrive in one network read
show a gap of (nearly) zero, which is what the user saw too. No Airflow imports here.
"""

from __future__ import annotations

import json
import math
import time

import requests

from llm_release.analysis.samples import ProbeResult
from llm_release.errors import SpecError
from llm_release.metadata import check_model_name, check_version

DEFAULT_PROMPT = "Triton release probe:"
_ERROR_TEXT_LIMIT = 300


def stream_probe(gateway_url: str, model: str, version: int, *, prompt: str = DEFAULT_PROMPT,
                 max_tokens: int = 8, timeout_s: float = 10.0,
                 session: requests.Session | None = None) -> ProbeResult:
    """Stream one generation from exactly `version` and time its tokens.

    ok=True needs HTTP 200, at least one token, no `error` event, every event answered by
    `version`, and the whole stream within `timeout_s` (it bounds the stream, not each read,
    so a version that trickles tokens forever still fails). Anything else gives ok=False with
    the reason, including the HTTP status where there was one.
    """
    model = check_model_name(model)
    version = check_version(version)
    _check_probe_args(prompt, max_tokens, timeout_s)
    url = f"{gateway_url.rstrip('/')}/v2/models/{model}/versions/{version}/generate_stream"
    body = {"text_input": prompt, "max_tokens": max_tokens, "stream": True}
    http = session or requests
    started = time.perf_counter()
    deadline = started + timeout_s
    try:
        # The read timeout bounds each wait for bytes; the deadline below bounds the stream.
        with http.post(url, json=body, stream=True, timeout=(min(timeout_s, 5.0), timeout_s),
                       headers={"Accept": "text/event-stream"}) as resp:
            if resp.status_code != 200:
                return _failed(f"HTTP {resp.status_code} from {url}: {_error_text(resp)}")
            return _read_stream(resp, str(version), started, deadline, timeout_s)
    except requests.Timeout as exc:
        return _failed(f"timed out after {timeout_s:g} s waiting for {url}: {exc}")
    except requests.ConnectionError as exc:
        # A read timeout in the middle of a streamed body surfaces as a ConnectionError.
        what = "timed out" if "timed out" in str(exc).lower() else "connection failed"
        return _failed(f"{what} on {url}: {exc}")
    except requests.RequestException as exc:
        return _failed(f"request to {url} failed: {exc}")


def probe_versions(gateway_url: str, model: str, versions, *, count: int = 1,
                   prompt: str = DEFAULT_PROMPT, max_tokens: int = 8, timeout_s: float = 10.0,
                   session: requests.Session | None = None) -> dict[int, tuple[ProbeResult, ...]]:
    """`count` probes of each version (canary and baseline), in send order per version.

    Sequential and interleaved (v_a, v_b, v_a, v_b, ...): the versions usually share a server,
    so probing them turn by turn exposes both to the same moments of load and keeps our own
    probes from queueing behind each other and skewing the comparison.
    """
    versions = [check_version(v) for v in versions]
    if not versions:
        raise SpecError("versions", "no version given", "name the canary and the baseline")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SpecError("count", f"{count!r} is not a positive integer", "probe each version at least once")
    own = session is None
    http = session or requests.Session()
    results: dict[int, list[ProbeResult]] = {v: [] for v in versions}
    try:
        for _ in range(count):
            for version in results:
                results[version].append(stream_probe(gateway_url, model, version, prompt=prompt,
                                                     max_tokens=max_tokens, timeout_s=timeout_s,
                                                     session=http))
    finally:
        if own:
            http.close()
    return {v: tuple(r) for v, r in results.items()}


def _check_probe_args(prompt, max_tokens, timeout_s) -> None:
    if not isinstance(prompt, str) or not prompt:
        raise SpecError("prompt", "must be a non-empty string", "use a short fixed prompt")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise SpecError("max_tokens", f"{max_tokens!r} is not a positive integer",
                        "ask for a few tokens, e.g. 8 (two are needed for one inter-token gap)")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) \
            or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise SpecError("timeout_s", f"{timeout_s!r} is not a positive number of seconds", "use e.g. 10")


def _read_stream(resp: requests.Response, version: str, started: float, deadline: float,
                 timeout_s: float) -> ProbeResult:
    """Token arrival times from the SSE body; the first problem ends the probe."""
    arrivals: list[float] = []
    for event, arrived in _events(resp):
        if arrived > deadline:
            return _failed(f"timed out: the stream took over {timeout_s:g} s "
                           f"(HTTP 200, {len(arrivals)} tokens so far)")
        try:
            doc = json.loads(event)
        except ValueError:
            return _failed(f"bad stream (HTTP 200): event is not JSON: {event[:_ERROR_TEXT_LIMIT]!r}")
        if not isinstance(doc, dict):
            return _failed(f"bad stream (HTTP 200): event is not a JSON object: {event[:_ERROR_TEXT_LIMIT]!r}")
        if "error" in doc:
            return _failed(f"error event after {len(arrivals)} tokens (HTTP 200): "
                           f"{str(doc['error'])[:_ERROR_TEXT_LIMIT]}")
        served = doc.get("model_version")
        if served is not None and str(served) != version:
            return _failed(f"answered by version {served!r}, not {version} (HTTP 200)")
        if doc.get("text_output"):
            arrivals.append(arrived)
    if time.perf_counter() > deadline:
        return _failed(f"timed out: the stream took over {timeout_s:g} s (HTTP 200, {len(arrivals)} tokens)")
    if not arrivals:
        return _failed("stream ended without a token (HTTP 200)")
    ttft_ms = (arrivals[0] - started) * 1000.0
    itl_ms = tuple(round((b - a) * 1000.0, 3) for a, b in zip(arrivals, arrivals[1:]))
    return ProbeResult(ok=True, ttft_ms=round(ttft_ms, 3), itl_ms=itl_ms)


def _events(resp: requests.Response):
    """(data of one SSE event, perf_counter at its arrival), as the bytes arrive.

    iter_content(chunk_size=None) hands over each chunk as soon as it is read, so arrival times
    are not delayed by buffering; Triton sends one `data:` line per event and no multi-line
    events, but lines are still joined per event as the SSE format defines.
    """
    buffer = b""
    data_lines: list[str] = []
    for chunk in resp.iter_content(chunk_size=None):
        arrived = time.perf_counter()
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if line == "":
                if data_lines:
                    yield "\n".join(data_lines), arrived
                    data_lines = []
            elif line.startswith("data:"):
                data_lines.append(line[5:].lstrip(" "))
            # other fields (event:, id:, retry:) and comments (":") carry nothing for us
    tail = buffer.decode("utf-8", errors="replace").rstrip("\r\n")
    if tail.startswith("data:"):
        data_lines.append(tail[5:].lstrip(" "))
    if data_lines:
        yield "\n".join(data_lines), time.perf_counter()


def _error_text(resp: requests.Response) -> str:
    """The error message of a failed answer: JSON `error`, an SSE `data: {"error": ...}`, or text."""
    try:
        text = resp.text
    except requests.RequestException as exc:
        return f"(body unreadable: {exc})"
    candidate = text.strip()
    if candidate.startswith("data:"):
        candidate = candidate[5:].strip()
    try:
        doc = json.loads(candidate)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])[:_ERROR_TEXT_LIMIT]
    return text.strip()[:_ERROR_TEXT_LIMIT] or "(empty body)"


def _failed(reason: str) -> ProbeResult:
    return ProbeResult(ok=False, error=reason)
