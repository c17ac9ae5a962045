"""Operators: arguments parsed as the core needs them, template fields that really render, and
one retry rule for all of them (permanent errors fail now, transient ones retry with backoff)."""

from __future__ import annotations

import importlib
import inspect
from datetime import timedelta

import pendulum
import pytest
import requests

from llm_release.errors import SpecError, TritonError

OPERATOR_MODULES = ("llm_release_airflow.operators.triton_load", "llm_release_airflow.operators.artifacts",
                    "llm_release_airflow.operators.traffic", "llm_release_airflow.operators.gates",
                    "llm_release_airflow.sensors.canary_analysis")


def operator_classes():
    from airflow.sdk import BaseOperator

    found = []
    for name in OPERATOR_MODULES:
        module = importlib.import_module(name)
        found += [cls for cls in vars(module).values() if inspect.isclass(cls) and issubclass(cls, BaseOperator)
                  and cls.__module__ == name and not cls.__name__.startswith("_")]
    return found


REQUIRED = {"TritonLoadOperator": {"model": "m", "version": 1}, "TritonProbeOperator": {"model": "m", "version": 1},
            "PublishOperator": {"engine_dir": "/e", "destination": {}}, "ArtifactSyncPlanOperator": {"target": {}},
            "ArtifactSyncOperator": {"target": {}}, "TrafficShiftOperator": {"model": "m"},
            "TrafficRollbackOperator": {"previous": {}},
            "GateEvaluationOperator": {"model": "m", "candidate": 2, "baseline": 1},
            "CanaryAnalysisSensor": {"model": "m", "candidate": 2, "baseline": 1}}


def render(operator, params: dict):
    """Render the operator's template fields as a worker does, with the DAG's native rendering."""
    operator.render_template_fields({"params": params, "dag": operator.dag, "task": operator, "run_id": "manual__t"})
    return operator


def dag(**params):
    from airflow.sdk import DAG, Param

    return DAG("glue_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1), render_template_as_native_obj=True,
               params={k: Param(v) for k, v in params.items()})


def test_every_operator_is_listed_and_has_required_arguments():
    assert {cls.__name__ for cls in operator_classes()} == set(REQUIRED)


@pytest.mark.parametrize("cls", operator_classes(), ids=lambda c: c.__name__)
def test_template_fields_name_real_attributes_and_retry_defaults_apply(cls):
    from llm_release_airflow.retry_policy import DEFAULT_RETRIES, ReleaseOperator

    operator = cls(task_id="t", **REQUIRED[cls.__name__])
    assert issubclass(cls, ReleaseOperator)
    missing = [f for f in cls.template_fields if not hasattr(operator, f)]
    assert missing == []
    assert operator.retries == DEFAULT_RETRIES and operator.retry_exponential_backoff == 2.0
    assert operator.retry_delay == timedelta(seconds=20) and operator.max_retry_delay == timedelta(minutes=10)
    assert getattr(cls.execute, "_llm_release_fail_fast", False)


def test_a_dags_default_args_and_a_tasks_own_arguments_win_over_the_defaults():
    from airflow.sdk import DAG

    from llm_release_airflow.operators.triton_load import TritonProbeOperator

    with DAG("d", schedule=None, start_date=pendulum.datetime(2026, 1, 1), default_args={"retries": 7}):
        assert TritonProbeOperator(task_id="a", model="m", version=1).retries == 7
        assert TritonProbeOperator(task_id="b", model="m", version=1, retries=0).retries == 0


def test_mapped_operators_carry_the_retry_defaults_to_the_scheduler():
    from llm_release_airflow.operators.artifacts import ArtifactSyncOperator

    with dag():
        mapped = ArtifactSyncOperator.partial(task_id="sync").expand_kwargs([{"target": {}}])
    assert mapped.partial_kwargs["retries"] == 3
    assert mapped.partial_kwargs["retry_exponential_backoff"] == 2.0


def test_load_operator_renders_params_as_native_values():
    from llm_release_airflow.operators.triton_load import TritonLoadOperator

    with dag(model="llama", version=3, keep=False):
        op = TritonLoadOperator(task_id="load", model="{{ params.model }}", version="{{ params.version }}",
                                keep_serving="{{ params.keep }}", topology="{{ 'model_per_release' }}")
    render(op, {"model": "llama", "version": 3, "keep": False})
    assert (op.model, op.version, op.keep_serving, op.topology) == ("llama", 3, False, "model_per_release")


def test_traffic_shift_renders_weights_and_header_routes_into_a_routing_state():
    from llm_release_airflow.operators.traffic import TrafficShiftOperator

    params = {"model": "llama", "weights": {"1": 90, "2": 10}, "routes": {"B": 2}, "mirror": 3}
    with dag(**params):
        op = TrafficShiftOperator(task_id="shift", model="{{ params.model }}", weights="{{ params.weights }}",
                                  header="x-experiment", header_routes="{{ params.routes }}",
                                  mirror_version="{{ params.mirror }}", mirror_percent=50)
    state = render(op, params)._target()
    assert state.weights == {1: 90, 2: 10}
    assert state.header_routes == {"B": 2} and state.mirror_version == 3 and state.mirror_percent == 50


@pytest.mark.parametrize("kwargs, field", [
    ({"weights": {"1": 90, "2": 10}, "switch_to": 2}, "weights"),
    ({}, "weights"),
    ({"weights": {"1": 80}}, "weights"),
    ({"switch_to": "two"}, "switch_to"),
    ({"weights": {"1": 100}, "header": "x-exp", "header_routes": {"B": 0}}, "header_routes[B]"),
])
def test_traffic_shift_refuses_bad_arguments_naming_the_field(kwargs, field):
    from llm_release_airflow.operators.traffic import TrafficShiftOperator

    with pytest.raises(SpecError) as caught:
        TrafficShiftOperator(task_id="shift", model="llama", **kwargs)._target()
    assert caught.value.field == field


def test_sync_options_from_rendered_params():
    from llm_release_airflow.operators.artifacts import _sync_options

    everything = _sync_options(None, "None", "False", "3")
    assert everything.models is None and everything.version is None and not everything.dry_run
    one = _sync_options("llama", 4, True, 1)
    assert one.models == ("llama",) and one.version == 4 and one.dry_run and one.keep_latest == 1
    with pytest.raises(SpecError, match="version"):
        _sync_options("llama", 0, False, 3)


def test_a_permanent_error_fails_the_task_at_once(connection):
    """An unsupported topology is a spec error: no retry, and nothing was asked of Triton."""
    from airflow.sdk.exceptions import AirflowFailException

    from llm_release_airflow.operators.triton_load import TritonLoadOperator

    connection("triton_default", conn_type="triton", host="127.0.0.1", port=9)  # nothing listens there
    op = TritonLoadOperator(task_id="load", model="llama", version=2, topology="per_pod")
    with pytest.raises(AirflowFailException, match=r"topology: 'per_pod' is not supported.*permanent: SpecError") as caught:
        op.execute({})
    assert isinstance(caught.value.__cause__, SpecError)


def test_a_transient_error_is_left_for_airflow_to_retry(connection):
    from llm_release_airflow.operators.triton_load import TritonProbeOperator

    connection("triton_default", conn_type="triton", host="127.0.0.1", port=9)
    with pytest.raises(TritonError, match="unreachable"):
        TritonProbeOperator(task_id="probe", model="llama", version=2).execute({})


def test_the_rule_applies_to_client_library_errors_too():
    from airflow.sdk.exceptions import AirflowFailException

    from llm_release_airflow.retry_policy import fail_now_if_permanent

    def answered(status):
        response = requests.Response()
        response.status_code = status
        raise requests.HTTPError(str(status), response=response)

    with pytest.raises(AirflowFailException):
        fail_now_if_permanent(answered)(404)
    with pytest.raises(requests.HTTPError):
        fail_now_if_permanent(answered)(503)
