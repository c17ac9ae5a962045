"""The release DAG with dag.test() on the real stack: real traffic through Envoy while it runs,
the judge in the (inline) trigger, records in the stack's SQLite file (the connection
`llm_release_records` the stack writes), environments from the `llm_release_environments`
Variable. Approvals, which need a person, are tested under a real scheduler in
test_local_airflow.py.
"""

from __future__ import annotations

import pytest

from llm_release.engine.faults import Faults, install_faulty_version
from llm_release.loadgen import SteadyLoad
from llm_release.model_repo import install_version
from llm_release.records import ReleaseRecords
from llm_release.routing.state import RoutingState
from tests.airflow.harness import dag_test

MODEL = "release_dag_lm"
STABLE, GOOD, BAD = 1, 2, 3
ONSET_S = 20.0


@pytest.fixture(scope="module")
def dag_model(stack, engines, triton, router):
    repo = stack["model_repository"]
    engine = engines["dir"] / "engine1"
    install_version(engine, repo, model_name=MODEL, version=STABLE)
    install_version(engine, repo, model_name=MODEL, version=GOOD)
    install_faulty_version(engine, repo, Faults(error_rate=0.3, onset_s=ONSET_S, seed=21), model_name=MODEL,
                           version=BAD)
    triton.load_versions(MODEL, [STABLE])
    router.apply(RoutingState(MODEL, {STABLE: 100}))
    try:
        yield MODEL
    finally:
        router.apply(RoutingState(MODEL, {STABLE: 100}))
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [STABLE])


@pytest.fixture()
def records(stack):
    with ReleaseRecords(ReleaseRecords.sqlite_url(f"{stack['state_dir']}/records/releases.db")) as store:
        yield store


def release(airflow_env, stack, conf: dict) -> dict:
    with SteadyLoad(f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=30.0):
        return dag_test(airflow_env, "release", {"model": MODEL, "min_soak_s": 10, "max_soak_s": 240, **conf})


def test_a_good_version_is_released_to_staging_without_approval(airflow_env, stack, router, records, dag_model):
    result = release(airflow_env, stack, {"version": GOOD, "steps": [50, 100]})
    assert result.get("state") == "success", result
    tasks = result["tasks"]
    assert tasks["approve"] == "skipped" and tasks["promote"] == "success" and tasks["rollback"] == "skipped", tasks
    assert router.get_state(MODEL) == RoutingState(MODEL, {GOOD: 100})
    (record, *_) = records.history(MODEL, environment="staging")
    assert record.outcome == "promoted" and record.version == GOOD and record.id == result["xcoms"]["begin"]
    assert [e.data["decision"] for e in record.events if e.kind == "verdict"] == ["PASS"]


def test_a_version_that_starts_failing_mid_canary_is_rolled_back_and_the_run_fails(airflow_env, stack, router,
                                                                                  records, dag_model):
    stable = RoutingState(MODEL, {STABLE: 100}, header="x-team", header_routes={"qa": STABLE})
    router.apply(stable)
    result = release(airflow_env, stack, {"version": BAD, "steps": [50, 100], "min_soak_s": ONSET_S + 60,
                                          "max_soak_s": ONSET_S + 120})
    assert result.get("state") == "failed", result
    tasks = result["tasks"]
    assert tasks["steps"] == "failed" and tasks["rollback"] == "failed" and tasks["promote"] in ("upstream_failed",
                                                                                                 "skipped"), tasks
    assert router.get_state(MODEL) == stable  # exactly, the A/B route included
    (record, *_) = records.history(MODEL, environment="staging")
    assert record.outcome == "rolled_back" and record.reason.startswith("the judge failed step 50%"), record.reason
    verdict = next(e.data for e in record.events if e.kind == "verdict")
    assert verdict["decision"] == "FAIL" and verdict["rolled_back"]  # the triggerer restored the routing at once


@pytest.mark.parametrize("conf, field", [
    ({"version": "latest"}, "version"),
    ({"version": 2, "model": "x; rm -rf /"}, "model"),
    ({"version": 2, "steps": [50, 10]}, "steps"),
    ({"version": 2, "environment": "moon"}, "environment"),
    ({"version": BAD, "environment": "production"}, "never passed staging"),  # environments are never skipped
])
def test_bad_input_is_refused_before_any_traffic_moves(airflow_env, stack, router, dag_model, conf, field):
    before = router.get_state(MODEL)
    result = dag_test(airflow_env, "release", {"model": MODEL, **conf})
    assert result.get("state") != "success", result
    assert result.get("tasks", {}).get("load") in (None, "upstream_failed"), result.get("tasks")
    refusal = result.get("message") or result["output"]  # refused by the form, or by the begin task
    assert f"{field}" in refusal and ("SpecError" in refusal or "ParamValidationError" in result.get("error", "")), \
        refusal[-3000:]
    assert router.get_state(MODEL) == before


def test_the_emergency_rollback_dag_puts_all_traffic_back_in_one_task(airflow_env, stack, router, triton, records,
                                                                      dag_model):
    triton.load_versions(MODEL, sorted(set(triton.ready_versions(MODEL)) | {STABLE, GOOD}))
    router.apply(RoutingState(MODEL, {STABLE: 50, GOOD: 50}))
    result = dag_test(airflow_env, "emergency_rollback", {"model": MODEL, "environment": "staging",
                                                          "to_version": STABLE, "reason": "incident 42"})
    assert result.get("state") == "success", result
    assert router.get_state(MODEL) == RoutingState(MODEL, {STABLE: 100})
    assert result["xcoms"]["roll_back"]["recorded"]
    assert "incident 42" in records.history(MODEL, environment="staging")[0].reason
