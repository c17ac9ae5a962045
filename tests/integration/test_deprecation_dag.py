"""The deprecation DAG with dag.test() on the real stack: a dry run changes nothing; a real run
retires the oldest version (routes, Triton, model repository) and keeps the newest and the
stable one; a version that had traffic in the window is refused with its request count."""

from __future__ import annotations

import time

import pytest

from llm_release.loadgen import send_generate_requests
from llm_release.model_repo import install_version, installed_versions
from llm_release.routing.state import RoutingState
from tests.airflow.harness import dag_test

MODEL = "deprecate_lm"


@pytest.fixture(scope="module")
def old_versions(stack, engines, triton, router):
    repo = stack["model_repository"]
    for version in (1, 2, 3, 4):
        install_version(engines["dir"] / "engine1", repo, model_name=MODEL, version=version)
    triton.load_versions(MODEL, [1, 2, 3, 4])
    router.apply(RoutingState(MODEL, {3: 100}))  # v3 stable, v4 newest without traffic
    try:
        yield MODEL
    finally:
        router.apply(RoutingState(MODEL, {3: 100}))
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [3])


def deprecate(airflow_env, **conf):
    return dag_test(airflow_env, "deprecation", {"environments": ["staging"], "models": [MODEL], "keep_newest": 1,
                                                 "zero_traffic_window_s": 30, **conf})


def test_a_dry_run_plans_and_changes_nothing(airflow_env, stack, triton, old_versions):
    result = deprecate(airflow_env, dry_run=True)
    assert result.get("state") == "success", result
    assert result["xcoms"]["plan"] == []  # nothing handed to the retire task
    assert "retire [1, 2] (dry run: nothing changes)" in result["output"]
    assert triton.ready_versions(MODEL) == [1, 2, 3, 4]


def test_old_versions_without_traffic_are_retired_and_one_with_traffic_is_refused(airflow_env, stack, triton, router,
                                                                                 old_versions):
    # v2 answers a few requests through its pinned path now: inside the 30 s window.
    sent = send_generate_requests(f"{stack['components']['envoy']['url']}/v2/models/{MODEL}/versions/2/generate",
                                  count=5, concurrency=1)
    assert sent.errors == 0
    time.sleep(3)  # flushed by Envoy and scraped by Prometheus
    result = deprecate(airflow_env)
    assert result.get("state") == "failed", result  # v2's refusal fails its task, and the run
    retired = [x for key, x in result["xcoms"].items() if key.startswith("retire[") and x]
    assert [r["version"] for r in retired] == [1], retired  # v2's task failed, so it returned nothing
    assert "deprecate_lm v2 took 5 requests in the last 30 s" in result["output"], result["output"][-3000:]
    assert triton.ready_versions(MODEL) == [2, 3, 4]  # v1 retired, v2 refused, v3 stable, v4 newest
    assert installed_versions(stack["model_repository"], MODEL) == [2, 3, 4]
    assert 1 not in router.known_versions(MODEL)
    assert router.get_state(MODEL) == RoutingState(MODEL, {3: 100})
