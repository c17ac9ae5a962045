"""The canary sensor and its trigger, in this process: what they hand the core, how a verdict
ends the task (log, file, XCom, no retry on FAIL), and that no data never becomes a PASS."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from llm_release.analysis.judge import judge_intervals
from llm_release.analysis.samples import Health, Interval, VersionCounts
from llm_release.routing.state import RoutingState

T0 = 1_800_000_000.0


@pytest.fixture()
def endpoints(connection, tmp_path):
    connection("prometheus_default", conn_type="prometheus", host="127.0.0.1", port=_closed_port(), schema="http")
    connection("llm_gateway_default", conn_type="llm_gateway", host="127.0.0.1", port=18080, schema="http",
               extra={"router": "envoy", "admin_url": "http://127.0.0.1:1", "control_plane_url": "http://xds.local:18090",
                      "upstream_port": 8000})
    connection("triton_default", conn_type="triton", host="127.0.0.1", port=18000, schema="http",
               extra={"no_gpu_reason": "CPU-only test stack"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _TI:
    def __init__(self):
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = json.loads(json.dumps(value))  # what XCom would store


def _verdict(canary_5xx: int):
    iv = Interval(T0, T0 + 10, VersionCounts(100, canary_5xx), VersionCounts(100), health=Health(ready=True))
    return judge_intervals([iv], {"disabled": {"gpu_headroom": "CPU", "probe_failures": "no probe",
                                               "compare_ttft_p50": "no probe", "compare_itl_p50": "no probe"}})


def test_the_sensor_defers_with_endpoints_from_connections_and_the_runtime_reason(endpoints):
    from airflow.sdk.exceptions import TaskDeferred

    from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

    sensor = CanaryAnalysisSensor(task_id="judge", model="m", candidate="2", baseline=1, rollback_on_fail=True,
                                  min_soak_s="30", max_soak_s=600)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    path, kwargs = deferred.value.trigger.serialize()
    assert path == "llm_release_airflow.sensors.canary_trigger.CanaryAnalysisTrigger"
    assert kwargs["target"]["candidate"] == 2 and kwargs["target"]["gateway_url"] == "http://127.0.0.1:18080"
    assert kwargs["target"]["triton_url"] == "http://127.0.0.1:18000"
    assert kwargs["analysis"]["disabled"]["gpu_headroom"] == "connection triton_default: CPU-only test stack"
    assert RoutingState.from_dict(kwargs["rollback_to"]) == RoutingState("m", {1: 100})  # all on the baseline
    assert kwargs["min_soak_s"] == 30.0 and kwargs["max_soak_s"] == 600.0
    assert deferred.value.method_name == "execute_complete"


def test_bad_judge_settings_fail_the_task_before_any_soak(endpoints):
    from llm_release_airflow.retry_policy import PermanentTaskError
    from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

    sensor = CanaryAnalysisSensor(task_id="judge", model="m", candidate=2, baseline=1,
                                  analysis={"gates": {"error_rate": {"max": 5}}})
    with pytest.raises(PermanentTaskError, match="analysis.gates.error_rate.max"):
        sensor.execute({})


def test_a_fail_verdict_fails_the_task_without_retry_and_keeps_the_verdict(endpoints, tmp_path):
    from llm_release_airflow.retry_policy import PermanentTaskError
    from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

    verdict = _verdict(canary_5xx=40)
    assert verdict.outcome.value == "FAIL"
    sensor = CanaryAnalysisSensor(task_id="judge", model="m", candidate=2, baseline=1, report_dir=str(tmp_path))
    ti = _TI()
    with pytest.raises(PermanentTaskError, match="canary FAIL"):
        sensor.execute_complete({"ti": ti}, {"decision": "FAIL", "verdict": verdict.to_dict()})
    assert ti.xcom["canary_verdict"]["verdict"]["outcome"] == "FAIL"
    written = json.loads((tmp_path / "judge-m-v2.json").read_text())
    assert written["verdict"]["reason"] == verdict.reason
    assert (tmp_path / "judge-m-v2.txt").read_text().startswith("FAIL: ")


def test_a_pass_returns_the_verdict(endpoints, tmp_path):
    from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

    sensor = CanaryAnalysisSensor(task_id="judge", model="m", candidate=2, baseline=1, report_dir=str(tmp_path))
    ti = _TI()
    doc = _verdict(canary_5xx=0).to_dict() | {"outcome": "PASS"}
    result = sensor.execute_complete({"ti": ti}, {"decision": "PASS", "verdict": doc})
    assert result["decision"] == "PASS" and ti.xcom["canary_verdict"]["decision"] == "PASS"


def test_an_unreachable_prometheus_never_passes_in_the_trigger(endpoints):
    """No data for the whole soak: INCONCLUSIVE at every look, then TIMEOUT, never PASS."""
    import time

    from llm_release_airflow.sensors.canary_trigger import CanaryAnalysisTrigger

    trigger = CanaryAnalysisTrigger(
        target={"model": "m", "candidate": 2, "baseline": 1, "prometheus_url": f"http://127.0.0.1:{_closed_port()}"},
        analysis={"disabled": {"gpu_headroom": "CPU"}}, since=time.time() - 1, min_soak_s=0, max_soak_s=3,
        step_s=0.5, lag_s=0.0, poll_s=0.2)

    async def first_event():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["decision"] == "TIMEOUT"
    assert payload["verdict"]["outcome"] == "INCONCLUSIVE"
    assert "Prometheus" in payload["verdict"]["reason"]


def test_reschedule_mode_without_the_steps_start_is_refused(endpoints):
    from llm_release_airflow.retry_policy import PermanentTaskError
    from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

    sensor = CanaryAnalysisSensor(task_id="judge", model="m", candidate=2, baseline=1, deferrable=False,
                                  mode="reschedule")
    with pytest.raises(PermanentTaskError, match="mode: reschedule mode needs"):
        sensor.execute({})
