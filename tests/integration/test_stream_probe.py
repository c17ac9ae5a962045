"""The streaming probe through the real gateway: token timings of a good version, a slow one,
and every way a probe fails (error answer, unknown version, timeout, no server)."""

from __future__ import annotations

import socket
import statistics

import pytest

from llm_release.analysis.probe import probe_versions, stream_probe
from llm_release.engine.faults import Faults, install_faulty_version
from llm_release.errors import SpecError
from llm_release.routing.state import RoutingState

MODEL = "reference_lm_probe"
GOOD, LATE, BROKEN, SLOWED = 1, 2, 3, 4
ADDED_MS = 200
FAULTS = {GOOD: Faults(), LATE: Faults(added_latency_ms=ADDED_MS), BROKEN: Faults(error_rate=1.0),
          SLOWED: Faults(slow_factor=20)}


@pytest.fixture(scope="module")
def gateway(stack, engines, triton, router, urls):
    for version, faults in FAULTS.items():
        install_faulty_version(engines["dir"] / "engine1", stack["model_repository"], faults,
                               model_name=MODEL, version=version)
    triton.load_versions(MODEL, sorted(FAULTS))
    router.apply(RoutingState(MODEL, {GOOD: 25, LATE: 25, BROKEN: 25, SLOWED: 25}))  # pinned routes for all
    try:
        yield urls["gateway"]
    finally:
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [GOOD])


def test_a_good_version_streams_one_event_per_token(gateway):
    result = stream_probe(gateway, MODEL, GOOD, max_tokens=8)
    assert result.ok, result.error
    assert result.ttft_ms > 0 and result.error is None
    # One response per token; the empty final response is not forwarded by Triton.
    assert len(result.itl_ms) == 7 and all(gap >= 0 for gap in result.itl_ms)


def test_added_latency_shows_in_the_time_to_first_token(gateway):
    probes = probe_versions(gateway, MODEL, [GOOD, LATE], count=3, max_tokens=4)
    assert set(probes) == {GOOD, LATE} and all(len(p) == 3 and all(r.ok for r in p) for p in probes.values())
    # The fastest of each: the added wait is a floor, while a busy machine only adds spikes.
    ttft = {v: min(r.ttft_ms for r in results) for v, results in probes.items()}
    assert ttft[LATE] >= ADDED_MS and ADDED_MS - 50 <= ttft[LATE] - ttft[GOOD] <= ADDED_MS + 300, ttft
    assert all(len(r.itl_ms) == 3 for r in probes[LATE])


def test_a_slower_engine_shows_in_the_gaps_between_tokens(gateway):
    probes = probe_versions(gateway, MODEL, [GOOD, SLOWED], count=2, max_tokens=6)
    gaps = {v: statistics.median(g for r in results for g in r.itl_ms) for v, results in probes.items()}
    assert gaps[SLOWED] >= 5.0 and gaps[SLOWED] >= 5 * gaps[GOOD], gaps


def test_an_error_answer_fails_the_probe_with_its_status(gateway):
    result = stream_probe(gateway, MODEL, BROKEN)
    assert not result.ok and result.ttft_ms is None and result.itl_ms == ()
    assert result.error.startswith("HTTP 400 from ") and "internal error: injected fault" in result.error


def test_an_unknown_version_fails_the_probe(gateway):
    result = stream_probe(gateway, MODEL, 9)
    assert not result.ok and result.error.startswith("HTTP 404 from ") and "version 9" in result.error


def test_a_stream_over_its_time_budget_fails_the_probe(gateway):
    result = stream_probe(gateway, MODEL, LATE, timeout_s=ADDED_MS / 1000 / 4)
    assert not result.ok and "timed out" in result.error


def test_no_server_fails_the_probe_and_bad_arguments_are_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again on leaving: nothing listens there
    result = stream_probe(f"http://127.0.0.1:{port}", MODEL, GOOD, timeout_s=2)
    assert not result.ok and result.error.startswith("connection failed")
    for kwargs, field in (({"max_tokens": 0}, "max_tokens"), ({"timeout_s": 0}, "timeout_s"), ({"prompt": ""}, "prompt")):
        with pytest.raises(SpecError) as err:
            stream_probe("http://127.0.0.1:1", MODEL, GOOD, **kwargs)
        assert err.value.field == field
    with pytest.raises(SpecError) as err:
        probe_versions("http://127.0.0.1:1", MODEL, [GOOD], count=0)
    assert err.value.field == "count"
