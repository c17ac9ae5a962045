"""The fault-injecting reference engine on the real stack: faults reach clients through the
gateway as configured, and without faults it answers exactly like production.

Its own model name keeps it away from the versions of `reference_lm` that other tests route.
What a client sees for an injected fault is pinned here on purpose: Triton 2.51 answers every
error response of a decoupled Python model with HTTP 400 on /generate and /generate_stream,
whatever its TritonError code, so injected server errors count as 4xx at the gateway. A Triton
that maps error codes to statuses would fail these assertions and tell us to revisit that.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import make_reference_checkpoint
from llm_release.engine.faults import Faults, install_faulty_version, read_faults
from llm_release.errors import SpecError
from llm_release.model_repo import install_version, metadata_of
from llm_release.routing.envoy import cluster_name
from llm_release.routing.state import RoutingState
from llm_release.stats import binomial_interval

MODEL = "reference_lm_faulty"
NO_FAULTS, FAILING, SLOW, PRODUCTION = 1, 2, 3, 4
FAULTS = {
    NO_FAULTS: Faults(),
    FAILING: Faults(error_rate=0.3, refuse_rate=0.2, seed=7),
    SLOW: Faults(added_latency_ms=200),
}
# Loading another version set reloads every version of a model (new instances, new onset
# clocks), so the onset variant is a model of its own, loaded by its test.
ONSET_MODEL, ONSET_S = "reference_lm_faulty_onset", 2.0
BUILD_PARAMS = {"precision": "fp32", "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}


@pytest.fixture(scope="module")
def faulty(stack, engines, triton, router, urls):
    """Versions 1-3 with faults and 4 = the same engine with the production model.py, loaded
    and routed; the onset variant is installed and routed, and loaded by its test."""
    repo = stack["model_repository"]
    engine = engines["dir"] / "engine1"
    for version, faults in FAULTS.items():
        install_faulty_version(engine, repo, faults, model_name=MODEL, version=version)
    install_version(engine, repo, model_name=MODEL, version=PRODUCTION)
    install_faulty_version(engine, repo, Faults(error_rate=1.0, onset_s=ONSET_S), model_name=ONSET_MODEL, version=1)
    triton.load_versions(MODEL, [NO_FAULTS, FAILING, SLOW, PRODUCTION])
    # Every version named in a state gets its pinned route (and its own cluster).
    router.apply(RoutingState(MODEL, {NO_FAULTS: 25, FAILING: 25, SLOW: 25, PRODUCTION: 25}))
    router.apply(RoutingState(ONSET_MODEL, {1: 100}))
    session = requests.Session()
    try:
        yield {"gateway": urls["gateway"], "session": session, "repo": repo}
    finally:
        session.close()
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [NO_FAULTS])


def pinned(gateway: str, version: int, endpoint: str = "generate", model: str = MODEL) -> str:
    return f"{gateway}/v2/models/{model}/versions/{version}/{endpoint}"


def envoy_counts(admin_url: str, version: int) -> dict[str, int]:
    """The gateway's response classes for one version's cluster (what the judge reads)."""
    prefix = f"cluster.{cluster_name(MODEL, version)}."
    text = requests.get(f"{admin_url}/stats", params={"filter": f"^{prefix}upstream_rq_[245]xx$"}, timeout=5).text
    counts = {"2xx": 0, "4xx": 0, "5xx": 0}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        counts[name.rsplit("_", 1)[-1]] = int(value)
    return counts


def test_without_faults_it_answers_exactly_like_production(faulty):
    gateway, session = faulty["gateway"], faulty["session"]
    bodies = [
        {"text_input": "Release notes:", "max_tokens": 12},
        {"text_input": "The quick brown", "max_tokens": 16, "temperature": 0.9, "top_k": 20, "random_seed": 5},
        {"text_input": "Once upon", "max_tokens": 24, "stop_words": ["the"]},
    ]
    for body in bodies:
        answers = {}
        for version in (NO_FAULTS, PRODUCTION):
            resp = session.post(pinned(gateway, version), json=body, timeout=30)
            assert resp.status_code == 200, resp.text
            answers[version] = resp.json()["text_output"]
        assert answers[NO_FAULTS] == answers[PRODUCTION] != ""
    streams = {}
    for version in (NO_FAULTS, PRODUCTION):
        resp = session.post(pinned(gateway, version, "generate_stream"),
                            json={"text_input": "Release notes:", "max_tokens": 6, "stream": True}, timeout=30)
        assert resp.status_code == 200, resp.text
        streams[version] = [json.loads(line[5:])["text_output"] for line in resp.text.splitlines() if line.startswith("data:")]
    assert streams[NO_FAULTS] == streams[PRODUCTION] and len(streams[PRODUCTION]) == 6
    # A bad request is refused the same way too (production's own validation answers it).
    refused = [session.post(pinned(gateway, v), json={"text_input": "x", "max_tokens": 2, "top_p": 7.0}, timeout=30)
               for v in (NO_FAULTS, PRODUCTION)]
    assert [r.status_code for r in refused] == [400, 400] and refused[0].json() == refused[1].json()


def test_error_and_refusal_shares_reach_clients_through_the_gateway(faulty, urls):
    gateway, session = faulty["gateway"], faulty["session"]
    n = 200
    before = envoy_counts(urls["envoy_admin"], FAILING)
    outcomes = {"ok": 0, "error": 0, "refused": 0}
    for i in range(n):
        resp = session.post(pinned(gateway, FAILING), json={"text_input": f"request {i}", "max_tokens": 1}, timeout=30)
        if resp.status_code == 200:
            assert resp.json()["text_output"]
            outcomes["ok"] += 1
            continue
        assert resp.status_code == 400, (resp.status_code, resp.text)  # Triton 2.51: 400 whatever the code
        message = resp.json()["error"]
        if message.startswith("internal error: injected fault"):
            outcomes["error"] += 1
        else:
            assert message.startswith("prompt rejected: injected refusal"), message
            outcomes["refused"] += 1
    after = envoy_counts(urls["envoy_admin"], FAILING)
    lo, hi = binomial_interval(n, 0.3, 0.999)
    assert lo <= outcomes["error"] <= hi, outcomes
    lo, hi = binomial_interval(n, 0.2, 0.999)
    assert lo <= outcomes["refused"] <= hi, outcomes
    # What the canary judge reads: every injected fault on the version's cluster, as 4xx.
    assert after["4xx"] - before["4xx"] == outcomes["error"] + outcomes["refused"]
    assert after["5xx"] - before["5xx"] == 0
    assert after["2xx"] - before["2xx"] == outcomes["ok"]
    # The streaming endpoint fails the same way, before any token.
    statuses = set()
    for i in range(20):
        resp = session.post(pinned(gateway, FAILING, "generate_stream"),
                            json={"text_input": f"stream {i}", "max_tokens": 2, "stream": True}, timeout=30)
        statuses.add(resp.status_code)
        if resp.status_code == 400:
            assert resp.text.startswith("data: ") and "injected" in json.loads(resp.text[6:])["error"]
    assert statuses == {200, 400}


def test_added_latency_delays_every_answer(faulty):
    gateway, session = faulty["gateway"], faulty["session"]
    took = {NO_FAULTS: [], SLOW: []}
    for _ in range(5):
        for version in took:
            started = time.perf_counter()
            resp = session.post(pinned(gateway, version), json={"text_input": "Release notes:", "max_tokens": 4}, timeout=30)
            took[version].append((time.perf_counter() - started) * 1000)
            assert resp.status_code == 200, resp.text
    # The fastest of each: the added wait is a floor, while a busy machine only adds spikes.
    fastest = {version: min(times) for version, times in took.items()}
    assert fastest[SLOW] >= 200 and 150 <= fastest[SLOW] - fastest[NO_FAULTS] <= 500, took


def test_faults_start_at_the_onset(faulty, triton):
    gateway, session = faulty["gateway"], faulty["session"]
    triton.load_versions(ONSET_MODEL, [1])
    loaded_at = time.monotonic()  # the instance initialized just before this
    try:
        def statuses(count):
            return [session.post(pinned(gateway, 1, model=ONSET_MODEL), json={"text_input": "onset", "max_tokens": 1},
                                 timeout=30).status_code for _ in range(count)]

        early = statuses(5)
        assert time.monotonic() - loaded_at < ONSET_S - 0.5, "too slow to observe the time before the onset"
        assert early == [200] * 5
        time.sleep(max(0.0, loaded_at + ONSET_S + 0.2 - time.monotonic()))
        assert statuses(5) == [400] * 5
    finally:
        triton.unload_versions(ONSET_MODEL, [1])


def test_install_is_verified_idempotent_and_refuses_other_faults(tmp_path):
    """No server needed: the variant is an honest engine install."""
    ckpt = make_reference_checkpoint(tmp_path / "ckpt", seed=1)
    build_engine(ckpt, tmp_path / "engine", BUILD_PARAMS, model_name="m", version=1)
    repo = tmp_path / "repo"
    faults = Faults(error_rate=0.25, added_latency_ms=5, seed=3)
    target = install_faulty_version(tmp_path / "engine", repo, faults, model_name="m_faulty", version=2)
    meta = metadata_of(repo, "m_faulty", 2)
    assert meta.builder == "reference-numpy+faults"
    assert {"model.py", "reference_model.py", "faults.json"} <= set(meta.files)
    assert (target / "reference_model.py").read_bytes() == (tmp_path / "engine" / "model.py").read_bytes()
    assert b"faults.json" not in (tmp_path / "engine" / "model.py").read_bytes()
    assert read_faults(target) == faults
    assert install_faulty_version(tmp_path / "engine", repo, faults, model_name="m_faulty", version=2) == target
    with pytest.raises(SpecError) as err:
        install_faulty_version(tmp_path / "engine", repo, Faults(error_rate=0.5), model_name="m_faulty", version=2)
    assert err.value.field == "version"


@pytest.mark.parametrize("kwargs, field", [
    ({"error_rate": 1.5}, "error_rate"),
    ({"refuse_rate": -0.1}, "refuse_rate"),
    ({"error_rate": 0.6, "refuse_rate": 0.6}, "refuse_rate"),
    ({"added_latency_ms": float("nan")}, "added_latency_ms"),
    ({"slow_factor": 0.5}, "slow_factor"),
    ({"onset_s": -1}, "onset_s"),
    ({"seed": True}, "seed"),
])
def test_bad_settings_name_their_field(kwargs, field):
    with pytest.raises(SpecError) as err:
        Faults(**kwargs)
    assert err.value.field == field
    with pytest.raises(SpecError) as err:
        Faults.from_dict({"error_rate": 0.1, "latency": 5})
    assert err.value.field == "latency"
