"""The canary judge on the real stack: load through Envoy, counts from Prometheus, probes
through the gateway, readiness from Triton, and candidates that misbehave for real (the
fault-injecting reference engine).

Every scenario routes the model 50/50 between the baseline (v1, the production engine) and one
candidate, sends steady load through the gateway, and polls the judge live as the Airflow
trigger does, with the judge's default settings (only the GPU gate is off: CPU stack).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from llm_release.analysis.canary import CanaryTarget, StepWatch, build_analysis
from llm_release.analysis.probe import probe_versions
from llm_release.analysis.verdict import Outcome
from llm_release.engine.faults import Faults, install_faulty_version
from llm_release.loadgen import SteadyLoad, send_generate_requests
from llm_release.model_repo import install_version
from llm_release.routing.state import RoutingState

MODEL = "canary_lm"
BASELINE, GOOD, FAILING, SLOW, REFUSING = 1, 2, 3, 4, 5
CANDIDATES = {  # GOOD is the production engine itself, installed as a new version
    FAILING: Faults(error_rate=0.3, seed=3),  # Triton answers these with 400 (see test_fault_engine)
    SLOW: Faults(slow_factor=5.0, added_latency_ms=20, seed=4),
    REFUSING: Faults(refuse_rate=0.3, seed=5),
}
ONSET_MODEL, ONSET_S = "canary_lm_onset", 35.0
SETTINGS = {"disabled": {"gpu_headroom": "local stack: Triton on CPU"}}
RATE_PER_S = 30.0  # about 15 a second for each version at 50/50


@pytest.fixture(scope="module")
def canary_models(stack, engines, triton, router):
    repo = stack["model_repository"]
    engine = engines["dir"] / "engine1"
    install_version(engine, repo, model_name=MODEL, version=BASELINE)
    install_version(engine, repo, model_name=MODEL, version=GOOD)
    for version, faults in CANDIDATES.items():
        install_faulty_version(engine, repo, faults, model_name=MODEL, version=version)
    triton.load_versions(MODEL, [BASELINE, GOOD, *CANDIDATES])
    # Five versions have just started: let their first requests and start-up work pass before
    # the first scenario compares any two of them.
    router.apply(RoutingState(MODEL, {BASELINE: 100}))
    for version in (BASELINE, GOOD, *CANDIDATES):
        send_generate_requests(f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/versions/{version}/generate",
                               count=20, concurrency=2)
    time.sleep(5.0)
    install_version(engine, repo, model_name=ONSET_MODEL, version=BASELINE)
    install_faulty_version(engine, repo, Faults(error_rate=0.3, onset_s=ONSET_S, seed=6), model_name=ONSET_MODEL,
                           version=2)
    try:
        yield repo
    finally:
        router.apply(RoutingState(MODEL, {BASELINE: 100}))
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [BASELINE])


def target(urls, model: str = MODEL, candidate: int = GOOD) -> CanaryTarget:
    return CanaryTarget(model, candidate, BASELINE, urls["prometheus"], gateway_url=urls["gateway"],
                        triton_url=urls["triton"])


def judge_live(urls, router, candidate: int, *, model: str = MODEL, min_soak_s=0.0, max_soak_s=120.0,
               probe=True, weights=None, during=None):
    """Warm up, route, load, and poll the judge every second until the step is decided; return the looks."""
    router.apply(RoutingState(model, weights or {BASELINE: 50, candidate: 50}))
    # Warm up after routing: a version's pinned path goes through its own cluster only once the
    # gateway routes it, and a new cluster's first requests open its connections.
    warm_up(urls, model, (BASELINE, candidate))
    # Envoy merges latency histograms at its 1 s stats flush and Prometheus scrapes every second:
    # let the warm-up's requests land before the step starts, so they are not judged in it.
    time.sleep(3.0)
    since = time.time()
    analysis = build_analysis(target(urls, model, candidate), SETTINGS, since=since, probe=probe)
    watch = StepWatch(min_soak_s, max_soak_s)
    looks = []
    with SteadyLoad(f"{urls['gateway']}/v2/models/{model}/generate", rate_per_s=RATE_PER_S):
        while True:
            verdict = analysis.poll()
            elapsed = time.time() - since
            decision = watch.decide(verdict, elapsed)
            looks.append((elapsed, verdict, decision))
            if during is not None:
                during(elapsed, verdict)
            if decision:
                return looks
            time.sleep(1.0)


def warm_up(urls, model: str, versions, requests_each: int = 40) -> None:
    """A freshly loaded version answers its first requests slower; a release probes and warms a
    candidate before it takes traffic, so the step judges the version, not its first seconds."""
    for version in versions:
        send_generate_requests(f"{urls['gateway']}/v2/models/{model}/versions/{version}/generate",
                               count=requests_each, concurrency=2)
    probe_versions(urls["gateway"], model, list(versions), count=10)  # the streaming path too


def final(looks):
    elapsed, verdict, decision = looks[-1]
    return decision, verdict, elapsed


def test_a_good_candidate_passes(urls, router, canary_models):
    # Token-level checks see one probe a second per version: a PASS may take minutes on this stack.
    decision, verdict, elapsed = final(judge_live(urls, router, GOOD, max_soak_s=240))
    assert decision == "PASS", verdict.table()
    assert verdict.check("compare_4xx").outcome is Outcome.PASS
    assert verdict.check("compare_ttft_p50").outcome is Outcome.PASS  # the probe fed it
    assert verdict.check("crash_loop").outcome is Outcome.PASS  # readiness read from Triton
    assert verdict.check("gpu_headroom").outcome is Outcome.DISABLED


def test_a_candidate_failing_30_percent_fails_within_seconds(urls, router, stack, canary_models):
    looks = judge_live(urls, router, FAILING)
    decision, verdict, elapsed = final(looks)
    assert decision == "FAIL", verdict.table()
    assert elapsed < 20, verdict.table()
    failed = {c.name for c in verdict.checks if c.outcome is Outcome.FAIL}
    assert "compare_4xx" in failed or "compare_5xx" in failed
    # The same verdict from the command line, from the gateway's history alone.
    run = subprocess.run([sys.executable, "-m", "llm_release.cli", "analyze", "--model", MODEL, "--candidate",
                          str(FAILING), "--baseline", str(BASELINE), "--since", str(verdict.started),
                          "--until", str(verdict.at), "--state-dir", str(stack["state_dir"]), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert json.loads(run.stdout)["outcome"] == "FAIL"


def test_a_five_times_slower_candidate_fails(urls, router, canary_models):
    decision, verdict, _ = final(judge_live(urls, router, SLOW))
    assert decision == "FAIL", verdict.table()
    failed = {c.name for c in verdict.checks if c.outcome is Outcome.FAIL}
    assert failed & {"compare_latency_p50", "compare_latency_p95", "compare_ttft_p50", "compare_itl_p50"}


def test_a_candidate_refusing_prompts_the_baseline_answers_fails(urls, router, canary_models):
    decision, verdict, _ = final(judge_live(urls, router, REFUSING))
    assert decision == "FAIL", verdict.table()
    assert verdict.check("compare_4xx").outcome is Outcome.FAIL


def test_a_candidate_that_turns_bad_half_way_fails_within_the_step(urls, router, triton, canary_models):
    # The fault clock starts when Triton initialises the version, before the load call returns:
    # the earliest possible onset is ONSET_S after the call began.
    loading_from = time.time()
    triton.load_versions(ONSET_MODEL, [BASELINE, 2])
    try:
        looks = judge_live(urls, router, 2, model=ONSET_MODEL, min_soak_s=ONSET_S + 60, max_soak_s=ONSET_S + 90)
    finally:
        router.apply(RoutingState(ONSET_MODEL, {BASELINE: 100}))
        triton.unload_versions(ONSET_MODEL, [BASELINE, 2])
    decision, verdict, _ = final(looks)
    assert decision == "FAIL", verdict.table()
    onset = loading_from + ONSET_S
    before = [v.outcome for t, v, _ in looks if v is not None and v.at < onset]
    assert Outcome.FAIL not in before
    assert verdict.decided_at - onset < 30, verdict.table()


def test_prometheus_stopped_mid_soak_is_inconclusive_until_it_is_back(urls, router, stack, canary_models):
    seen = {"down": [], "stopped": False, "started": False}
    local = stack["stack"]

    def during(elapsed, verdict):
        if not seen["stopped"] and elapsed > 8:
            local.stop_component("prometheus")
            seen["stopped"] = time.time()
        elif seen["stopped"] and not seen["started"]:
            seen["down"].append(verdict)
            if time.time() - seen["stopped"] > 8:
                local.start_component("prometheus")
                seen["started"] = time.time()

    try:
        looks = judge_live(urls, router, GOOD, min_soak_s=40, max_soak_s=150, during=during)
    finally:
        if seen["stopped"] and not seen["started"]:
            local.start_component("prometheus")
    down = [v for v in seen["down"][2:]]  # the first looks may still read intervals scraped before
    assert down and all(v.outcome is Outcome.INCONCLUSIVE for v in down)
    assert any("Prometheus" in v.reason for v in down)
    decision, verdict, _ = final(looks)
    assert decision == "PASS", verdict.table()


def test_no_traffic_to_the_candidate_is_inconclusive(urls, router, canary_models):
    looks = judge_live(urls, router, GOOD, probe=False, weights={BASELINE: 100}, max_soak_s=12)
    decision, verdict, _ = final(looks)
    assert decision == "TIMEOUT", verdict.table() if verdict else decision
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "no traffic reached the canary" in verdict.reason


def test_the_canary_dag_rolls_back_on_fail_and_the_gate_operator_agrees(urls, router, canary_models, airflow_env):
    """dag.test() of canary_analysis: the sensor defers, its trigger judges the failing candidate
    and puts all traffic on the baseline itself; the verdict is in XCom. Then the one-shot gate
    operator over the same window fails too."""
    from tests.airflow.harness import dag_test, run_operator

    router.apply(RoutingState(MODEL, {BASELINE: 50, FAILING: 50}))
    time.sleep(1.0)
    started = time.time()
    conf = {"model": MODEL, "candidate": FAILING, "baseline": BASELINE, "min_soak_s": 0, "max_soak_s": 120,
            "rollback_on_fail": True, "analysis": {}}
    with SteadyLoad(f"{urls['gateway']}/v2/models/{MODEL}/generate", rate_per_s=RATE_PER_S):
        out = dag_test(airflow_env, "canary_analysis", conf)
        after = router.get_state(MODEL)
    assert out.get("tasks", {}).get("judge_canary") == "failed", out
    assert after == RoutingState(MODEL, {BASELINE: 100})
    kept = out["xcoms"]["judge_canary:canary_verdict"]
    assert kept["decision"] == "FAIL" and kept["verdict"]["outcome"] == "FAIL"
    assert kept["rolled_back"]["weights"] in ({"1": 100}, {1: 100})  # by the trigger, before the task resumed
    assert kept["report"].endswith(".json")
    gate = run_operator(airflow_env, "llm_release_airflow.operators.gates.GateEvaluationOperator", model=MODEL,
                        candidate=FAILING, baseline=BASELINE, since=started)
    assert gate.get("error") == "PermanentTaskError" and "gates FAIL" in gate["message"], gate


def test_the_sensor_in_poke_mode_fails_a_refusing_candidate(urls, router, canary_models, airflow_env):
    from tests.airflow.harness import dag_test

    router.apply(RoutingState(MODEL, {BASELINE: 50, REFUSING: 50}))
    time.sleep(1.0)
    conf = {"model": MODEL, "candidate": REFUSING, "baseline": BASELINE, "min_soak_s": 0, "max_soak_s": 120,
            "rollback_on_fail": True, "deferrable": False, "analysis": {}}
    with SteadyLoad(f"{urls['gateway']}/v2/models/{MODEL}/generate", rate_per_s=RATE_PER_S):
        out = dag_test(airflow_env, "canary_analysis", conf)
    assert out.get("tasks", {}).get("judge_canary") == "failed", out
    kept = out["xcoms"]["judge_canary:canary_verdict"]
    assert kept["verdict"]["outcome"] == "FAIL" and "compare_4xx" in kept["verdict"]["reason"]
    assert router.get_state(MODEL) == RoutingState(MODEL, {BASELINE: 100})  # rolled back by the task itself


def test_a_shadow_candidate_is_judged_on_its_mirrored_copies(urls, router, canary_models):
    """Shadow: the candidate only gets copies (on its own `_shadow` cluster); a refusing one fails."""
    shadow_state = RoutingState(MODEL, {BASELINE: 100}, mirror_version=REFUSING, mirror_percent=100)
    router.apply(shadow_state)
    time.sleep(1.0)
    since = time.time()
    target_ = CanaryTarget(MODEL, REFUSING, BASELINE, urls["prometheus"], gateway_url=urls["gateway"],
                           triton_url=urls["triton"], shadow=True)
    analysis = build_analysis(target_, SETTINGS, since=since)
    watch, decision, verdict = StepWatch(0, 90), None, None
    with SteadyLoad(f"{urls['gateway']}/v2/models/{MODEL}/generate", rate_per_s=RATE_PER_S / 2) as load:
        while not decision:
            time.sleep(1.0)
            verdict = analysis.poll()
            decision = watch.decide(verdict, time.time() - since)
    assert decision == "FAIL", verdict.table() if verdict else decision
    assert verdict.check("compare_4xx").outcome is Outcome.FAIL
    assert verdict.check("compare_latency_p50").outcome is Outcome.DISABLED  # one more hop: not comparable
    assert all(r.status == 200 for r in load.snapshot())  # clients never saw the shadow's answers
