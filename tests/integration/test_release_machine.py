"""Whole releases on the real stack, driven by the core state machine (no Airflow): traffic
through Envoy under live load, the judge on Prometheus, records in SQLite.

The stack plays staging and production (llm_release.stack.local.local_environments).
"""

from __future__ import annotations

import pytest

from llm_release.loadgen import SteadyLoad
from llm_release.model_repo import install_version
from llm_release.records import ReleaseRecords
from llm_release.release.machine import ReleaseMachine, ReleaseRefused, drive
from llm_release.release.spec import ReleaseSpec
from llm_release.routing.state import RoutingState
from llm_release.stack.local import local_environment

MODEL = "release_lm"
STABLE, GOOD, NEVER_STAGED = 1, 2, 4
FAST = {"min_soak_s": 10, "max_soak_s": 240}  # a borderline good version can take minutes to PASS


@pytest.fixture(scope="module")
def release_model(stack, engines, triton, router):
    repo = stack["model_repository"]
    engine = engines["dir"] / "engine1"
    for version in (STABLE, GOOD, NEVER_STAGED):
        install_version(engine, repo, model_name=MODEL, version=version)
    triton.load_versions(MODEL, [STABLE])
    try:
        yield MODEL
    finally:
        router.apply(RoutingState(MODEL, {STABLE: 100}))
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [STABLE])


@pytest.fixture()
def records(tmp_path):
    store = ReleaseRecords(ReleaseRecords.sqlite_url(tmp_path / "releases.db"))
    yield store
    store.close()


@pytest.fixture()
def stable_routing(router, release_model):
    """Every test starts from all traffic on the stable version, with an A/B route beside it
    (a rollback must restore that too, not just the split)."""
    state = RoutingState(MODEL, {STABLE: 100}, header="x-team", header_routes={"qa": STABLE})
    router.apply(state)
    return state


def machine(stack, records, name="staging", holder="test-holder"):
    return ReleaseMachine(records, local_environment(stack["state"], name), holder=holder)


def run(stack, records, spec: dict, *, env="staging", approve=None):
    m = machine(stack, records, env)
    spec = ReleaseSpec.from_dict({"model": MODEL, "environment": env, **FAST, **spec})
    record = m.begin(spec, requested_by="tester")
    with SteadyLoad(f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=30.0):
        try:
            return drive(m, record.id, approve=approve)
        except Exception:
            return records.get(record.id)


def test_production_refuses_a_digest_that_never_passed_staging(stack, records, router, stable_routing):
    m = machine(stack, records, "production")
    with pytest.raises(ReleaseRefused, match="never passed staging"):
        m.begin(ReleaseSpec.from_dict({"model": MODEL, "version": NEVER_STAGED, "environment": "production"}))
    assert router.get_state(MODEL) == stable_routing
    (record,) = records.history(MODEL)
    assert record.outcome == "refused" and "never passed staging" in record.reason


def test_a_rejected_approval_in_production_rolls_back(stack, records, router, stable_routing):
    # Staging first: recorded as promoted there (the whole staging path is the first test's).
    from llm_release.artifacts.manifest import Manifest

    digest = Manifest.of_engine_dir(f"{stack['model_repository']}/{MODEL}/{GOOD}").digest
    staged = records.create_release(model=MODEL, version=GOOD, environment="staging", region="local",
                                    strategy="canary", spec={}, artifact_digest=digest)
    records.finish(staged.id, state="promoted", outcome="promoted", reason="passed staging")
    asked = []

    def reject(record, evidence):
        asked.append(evidence)
        return False, "alice"

    # steps [100]: no judged step, straight to the approval (the DAG tests judge steps first).
    final = run(stack, records, {"version": GOOD, "steps": [100]}, env="production", approve=reject)
    assert final.outcome == "rolled_back" and "rejected by alice" in final.reason
    assert router.get_state(MODEL) == stable_routing
    assert "x-team=qa -> v1" in asked[0] and "v2 100%" in asked[0]  # what approving routes, what rejecting restores
    approvals = [e for e in final.events if e.kind == "approval"]
    assert approvals and approvals[0].actor == "alice"


def test_a_version_that_was_never_published_is_refused_before_anything_moves(stack, records, router, stable_routing):
    with pytest.raises(ReleaseRefused, match="v9 is not published"):
        machine(stack, records).begin(ReleaseSpec.from_dict({"model": MODEL, "version": 9}),
                                      published_digest=lambda model, version: None)
    assert router.get_state(MODEL) == stable_routing
    assert records.history(MODEL)[0].outcome == "refused"


def test_a_second_release_of_the_model_is_refused_naming_the_holder(stack, records, router, stable_routing):
    records.acquire_lease(model=MODEL, environment="staging/local", holder="release/manual__other", release_id=None,
                          ttl_s=600)
    with pytest.raises(ReleaseRefused, match="release/manual__other"):
        machine(stack, records).begin(ReleaseSpec.from_dict({"model": MODEL, "version": GOOD}))
    assert router.get_state(MODEL) == stable_routing


def rollback_cli(stack, *args):
    import json
    import subprocess
    import sys

    run_ = subprocess.run([sys.executable, "-m", "llm_release.cli", "rollback", "--model", MODEL, "--env", "staging",
                           "--state-dir", str(stack["state_dir"]), "--json", *args],
                          capture_output=True, text=True, timeout=60)
    assert run_.returncode == 0, run_.stdout + run_.stderr
    return json.loads(run_.stdout)


def test_on_call_rolls_back_the_release_in_flight_in_one_command(stack, records, router, stable_routing, tmp_path):
    m = machine(stack, records)
    record = m.begin(ReleaseSpec.from_dict({"model": MODEL, "version": GOOD, "steps": [50, 100]}))
    for step in (m.load, m.probe, m.shift):
        step(record.id)
    assert router.get_state(MODEL).weights == {STABLE: 50, GOOD: 50}
    result = rollback_cli(stack, "--records", records.url)  # no --to: the records say what was stable
    assert router.get_state(MODEL) == stable_routing
    assert result["recorded"] and result["release_id"] == record.id
    closed = records.get(record.id)
    assert closed.outcome == "rolled_back" and "emergency rollback" in closed.reason
    assert m.next_action(closed) is None  # the DAG's next task finds nothing left to do


def test_the_emergency_rollback_works_with_the_records_database_down(stack, router, stable_routing):
    router.apply(RoutingState(MODEL, {STABLE: 50, GOOD: 50}))
    result = rollback_cli(stack, "--to", str(STABLE), "--records", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert router.get_state(MODEL) == RoutingState(MODEL, {STABLE: 100})
    assert not result["recorded"] and "unreachable" in result["records_problem"]


def test_a_release_whose_driver_died_mid_step_resumes_from_its_record(stack, records, router, stable_routing):
    m = machine(stack, records)
    record = m.begin(ReleaseSpec.from_dict({"model": MODEL, "version": GOOD, "steps": [50, 100], **FAST}))
    for step in (m.load, m.probe, m.shift):
        record = step(record.id)
    since = record.context["since"]
    # The worker is gone; its retry is a new process with its own connection to the records.
    with ReleaseRecords(records.url) as again:
        retry = ReleaseMachine(again, local_environment(stack["state"], "staging"), holder="test-holder")
        assert retry.next_action(again.get(record.id)) == "judge"  # not a second shift, not a new start
        with SteadyLoad(f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=30.0):
            final = drive(retry, record.id)
    assert final.outcome == "promoted", final.reason
    assert router.get_state(MODEL) == RoutingState(MODEL, {GOOD: 100})
    steps = [e.data["routing"] for e in final.events if e.kind == "step"]
    assert [s["weights"] for s in steps] == [{"1": 50, "2": 50}]  # one shift, not a second one on resume
    assert steps[0]["header_routes"] == {"qa": 1}  # the stable routing's A/B route kept through the step
    verdicts = [e.data for e in final.events if e.kind == "verdict"]
    assert [v["decision"] for v in verdicts] == ["PASS"] and verdicts[0]["verdict"]["checks"]  # with its numbers
    assert verdicts[0]["verdict"]["started"] == pytest.approx(since)  # judged from when the step really began
    assert records.lease(model=MODEL, environment="staging/local") is None
    assert final.artifact_digest and final.artifact_digest.startswith("sha256:")


def test_an_ab_release_compares_the_arms_and_leaves_the_routing_as_it_was(stack, records, router, stable_routing):
    m = machine(stack, records)
    with pytest.raises(ReleaseRefused, match="ab_header.*x-team"):  # the model already routes by x-team
        m.begin(ReleaseSpec.from_dict({"model": MODEL, "version": GOOD, "strategy": "ab"}))
    record = m.begin(ReleaseSpec.from_dict({"model": MODEL, "version": GOOD, "strategy": "ab", "ab_header": "x-team",
                                            "ab_value": "B", **FAST}))
    url = f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/generate"
    with SteadyLoad(url, rate_per_s=15.0) as arm_a, SteadyLoad(url, rate_per_s=15.0, headers={"x-team": "B"}) as arm_b:
        final = drive(m, record.id)
    assert final.outcome == "passed", final.reason
    assert router.get_state(MODEL) == stable_routing  # the experiment's route is gone, the qa route kept
    (step,) = [e.data["routing"] for e in final.events if e.kind == "step"]
    assert step["header_routes"] == {"B": 2, "qa": 1} and step["weights"] == {"1": 100}
    arm_b_versions = {r.version for r in arm_b.snapshot() if r.status == 200}
    assert arm_b_versions <= {"2", "1"} and "2" in arm_b_versions  # B clients reached the candidate
    assert {r.version for r in arm_a.snapshot() if r.status == 200} == {"1"}  # A never saw it
    verdict = next(e.data["verdict"] for e in final.events if e.kind == "verdict")
    assert verdict["canary_requests"] > 0 and verdict["baseline_requests"] > 0  # the arms, compared
