"""TrafficShiftOperator / TrafficRollbackOperator as a worker runs them, against the real stack."""

from __future__ import annotations

import pytest

from llm_release.routing.state import RoutingState
from tests.airflow.harness import run_operator

SHIFT = "llm_release_airflow.operators.traffic.TrafficShiftOperator"
ROLLBACK = "llm_release_airflow.operators.traffic.TrafficRollbackOperator"
MODEL = "reference_lm"


def test_shift_then_rollback_restores_the_previous_routing_exactly(airflow_env, loaded, router):
    before = router.apply(RoutingState(MODEL, {1: 100}, header="x-experiment", header_routes={"B": 2}))
    shifted = run_operator(airflow_env, SHIFT, model=MODEL, weights={"1": 90, "2": 10},
                           header="x-experiment", header_routes={"B": "2"})
    assert "result" in shifted, shifted
    assert shifted["result"]["previous"] == before.to_dict()
    assert router.get_state(MODEL).weights == {1: 90, 2: 10}
    rolled = run_operator(airflow_env, ROLLBACK, previous=shifted["result"]["previous"])
    assert "result" in rolled, rolled
    assert router.get_state(MODEL) == before


def test_a_version_that_is_not_ready_gets_no_traffic(airflow_env, triton, loaded, router):
    before = router.apply(RoutingState(MODEL, {1: 100}))
    assert 3 not in triton.ready_versions(MODEL)
    out = run_operator(airflow_env, SHIFT, model=MODEL, weights={"1": 90, "3": 10})
    assert out["error"] == "PermanentTaskError" and out["cause"] == "SpecError", out
    assert "[3] are not READY" in out["message"]
    assert router.get_state(MODEL) == before


@pytest.mark.parametrize("kwargs, words", [
    ({"weights": {"1": 90, "2": 9}}, "sum to 99"),
    ({"weights": {"1": 110, "2": -10}}, "outside 0..100"),
    ({"weights": {"1": 90, "9": 10}}, "[9] are not READY"),
    ({"switch_to": 0}, "switch_to"),
    ({}, "either weights or switch_to"),
])
def test_bad_shifts_are_refused_and_routing_is_untouched(airflow_env, loaded, router, kwargs, words):
    before = router.apply(RoutingState(MODEL, {1: 100}))
    out = run_operator(airflow_env, SHIFT, model=MODEL, **kwargs)
    assert out.get("error") == "PermanentTaskError" and out["cause"] == "SpecError", out
    assert words in out["message"]
    assert router.get_state(MODEL) == before


def test_blue_green_switch_through_the_operator(airflow_env, loaded, router):
    router.apply(RoutingState(MODEL, {1: 100}))
    out = run_operator(airflow_env, SHIFT, model=MODEL, switch_to=2)
    assert out["result"]["applied"] == RoutingState(MODEL, {2: 100}).to_dict()
    router.apply(RoutingState(MODEL, {1: 100}))
