"""CanaryAnalysisSensor: hold a release step while the canary judge watches it.

Deferrable by default (the soak runs in the triggerer and holds no worker slot); `poke` mode
works too. Thin over llm_release.analysis.canary: this file resolves connections into
endpoints, logs the verdict as a table, writes it to files and XCom, and fails the task on a
FAIL (or an analysis still inconclusive at `max_soak_s`) without retrying: a verdict is not a
transient error. With `rollback_on_fail`, the routing goes back to the stable version the
moment the judge fails the canary (from the triggerer in deferrable mode), before the task
even resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from airflow.sdk import BaseSensorOperator

from llm_release_airflow.retry_policy import PermanentTaskError, ReleaseOperator

STEP_DEFAULTS = {"min_soak_s": 60.0, "max_soak_s": 1800.0}


class CanaryTargetMixin:
    """Shared by the sensor and the gate operator: endpoints from connections, verdict output."""

    def _target(self, *, probe: bool = True) -> dict:
        from llm_release.versions import parse_version
        from llm_release_airflow.hooks.gateway import GatewayHook
        from llm_release_airflow.hooks.prometheus import PrometheusHook
        from llm_release_airflow.hooks.triton import TritonHook

        gateway_url = GatewayHook(gateway_conn_id=self.gateway_conn_id).url if probe and self.gateway_conn_id else None
        self._runtime_disabled = {}
        if self.triton_conn_id:
            reason = (TritonHook(triton_conn_id=self.triton_conn_id).get_connection(self.triton_conn_id)
                      .extra_dejson or {}).get("no_gpu_reason")
            if reason:
                self._runtime_disabled["gpu_headroom"] = f"connection {self.triton_conn_id}: {reason}"
        return {
            "model": self.model, "candidate": parse_version(self.candidate, "candidate"),
            "baseline": parse_version(self.baseline, "baseline"), "shadow": _flag(self.shadow),
            "prometheus_url": PrometheusHook(prometheus_conn_id=self.prometheus_conn_id).client.base_url,
            "gateway_url": gateway_url,
            "triton_url": TritonHook(triton_conn_id=self.triton_conn_id).client.base_url if self.triton_conn_id else None,
            "triton_model": self.triton_model or None,
        }

    def _analysis_settings(self) -> dict:
        """The judge's settings: the task's own, plus checks the runtime cannot feed (with why)."""
        settings = dict(self.analysis or {})
        settings["disabled"] = {**getattr(self, "_runtime_disabled", {}), **(settings.get("disabled") or {})}
        return settings

    def _report(self, context, verdict_doc: dict | None, decision: str, extra: dict | None = None) -> dict:
        """Log the verdict as a table, keep it as files, and return what goes to XCom."""
        from llm_release.analysis.canary import write_verdict
        from llm_release.analysis.verdict import Verdict

        result = {"decision": decision, **(extra or {}), "verdict": verdict_doc}
        if verdict_doc is None:
            self.log.warning("%s: no verdict (no whole interval of data was seen)", decision)
            return result
        verdict = Verdict.from_dict(verdict_doc)
        self.log.info("Canary analysis of %s v%s against v%s: %s\n%s", self.model, self.candidate, self.baseline,
                      decision, verdict.table())
        directory = Path(self.report_dir) if self.report_dir else _default_report_dir(context)
        name = f"{self.task_id}-{self.model}-v{self.candidate}"
        try:
            path = write_verdict(directory, name, verdict, context={
                "model": self.model, "candidate": self.candidate, "baseline": self.baseline, "decision": decision,
                "dag_id": context["dag"].dag_id if context.get("dag") else None,
                "run_id": context.get("run_id"), **(extra or {})})
            self.log.info("Verdict written to %s (and %s.txt)", path, path.with_suffix(""))
            result["report"] = str(path)
        except OSError as exc:  # the XCom and the log still carry it
            self.log.warning("could not write the verdict file in %s: %s", directory, exc)
        return result


def _default_report_dir(context) -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    dag_id = context["dag"].dag_id if context.get("dag") else "adhoc"
    run_id = str(context.get("run_id") or "manual").replace("/", "_").replace(":", "-")
    return home / "llm-release" / "verdicts" / dag_id / run_id


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class CanaryAnalysisSensor(CanaryTargetMixin, BaseSensorOperator, ReleaseOperator):
    """Wait until the canary judge decides a step: PASS (after `min_soak_s`), FAIL, or too long inconclusive.

    :param model: the model name at the gateway.
    :param candidate: the version under analysis; :param baseline: the stable version.
    :param shadow: the candidate receives mirrored copies (judged on its shadow cluster).
    :param analysis: judge settings (thresholds, alpha/beta, disabled checks with reasons); see docs/analysis.md.
    :param min_soak_s: a PASS ends the step only after this long; a FAIL ends it at once.
    :param max_soak_s: still INCONCLUSIVE after this long, the step fails.
    :param since: the step's start (epoch seconds); default: when the sensor starts.
    :param rollback_on_fail: on FAIL, route all traffic to the baseline (or to `rollback_to`) at once.
    :param rollback_to: the routing to restore on FAIL (a RoutingState dict, e.g. a shift's "previous").
    :param report_dir: where the verdict files go (default: $AIRFLOW_HOME/llm-release/verdicts/<dag>/<run>).
    """

    template_fields: Sequence[str] = ("model", "candidate", "baseline", "shadow", "analysis", "since", "min_soak_s",
                                      "max_soak_s", "rollback_on_fail", "rollback_to", "report_dir", "deferrable")
    ui_color = "#fdd0a2"

    def __init__(self, *, model: str, candidate, baseline, shadow=False, analysis: dict | None = None,
                 min_soak_s: float = STEP_DEFAULTS["min_soak_s"], max_soak_s: float = STEP_DEFAULTS["max_soak_s"],
                 since=None, step_s: float = 1.0, lag_s: float = 2.0, rollback_on_fail: bool = False,
                 rollback_to: dict | None = None, report_dir: str | None = None, triton_model: str | None = None,
                 prometheus_conn_id: str = "prometheus_default", gateway_conn_id: str | None = "llm_gateway_default",
                 triton_conn_id: str | None = "triton_default", deferrable: bool = True, poke_interval: float = 1.0,
                 **kwargs):
        kwargs.setdefault("mode", "poke")
        # A safety net only: the step itself ends at max_soak_s (it may be templated here).
        kwargs.setdefault("timeout", 24 * 3600)
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.model = model
        self.candidate = candidate
        self.baseline = baseline
        self.shadow = shadow
        self.analysis = analysis
        self.min_soak_s = min_soak_s
        self.max_soak_s = max_soak_s
        self.since = since
        self.step_s = step_s
        self.lag_s = lag_s
        self.rollback_on_fail = rollback_on_fail
        self.rollback_to = rollback_to
        self.report_dir = report_dir
        self.triton_model = triton_model
        self.prometheus_conn_id = prometheus_conn_id
        self.gateway_conn_id = gateway_conn_id
        self.triton_conn_id = triton_conn_id
        self.deferrable = deferrable
        self._analysis = None

    def _since(self) -> float:
        if self.since in (None, "", "None"):
            self.since = time.time()
        return float(self.since)

    def _rollback_state(self) -> dict | None:
        from llm_release.routing.state import RoutingState
        from llm_release.versions import parse_version

        if isinstance(self.rollback_to, dict) and self.rollback_to:
            return RoutingState.from_dict(self.rollback_to).to_dict()
        if _flag(self.rollback_on_fail):
            return RoutingState(self.model, {parse_version(self.baseline, "baseline"): 100}).to_dict()
        return None

    def _check_settings(self) -> None:
        """Everything a bad spec can get wrong, before the soak starts."""
        from llm_release.analysis.canary import StepWatch
        from llm_release.analysis.config import JudgeConfig
        from llm_release.errors import SpecError

        try:
            self.min_soak_s, self.max_soak_s = float(self.min_soak_s), float(self.max_soak_s)
        except (TypeError, ValueError) as exc:
            raise SpecError("min_soak_s/max_soak_s", f"{self.min_soak_s!r}/{self.max_soak_s!r} are not numbers",
                            "give seconds, e.g. 60 and 1800") from exc
        if isinstance(self.analysis, str):
            self.analysis = json.loads(self.analysis) if self.analysis.strip() else {}
        StepWatch(self.min_soak_s, self.max_soak_s)
        JudgeConfig.from_dict(self.analysis or {})
        self._rollback_state()
        if not _flag(self.deferrable) and self.mode == "reschedule" and self.since in (None, "", "None"):
            # Each poke of a rescheduled sensor is a new process: without a fixed start every
            # poke would judge a new, empty step.
            raise SpecError("mode", "reschedule mode needs the step's start (since)",
                            "use the default deferrable mode, mode='poke', or give since")

    def execute(self, context):
        self._check_settings()
        if not _flag(self.deferrable):
            self.log.info("Judging %s v%s against v%s in this worker (poke mode), every %.0f s", self.model,
                          self.candidate, self.baseline, float(self.poke_interval))
            return super().execute(context)
        from llm_release_airflow.sensors.canary_trigger import CanaryAnalysisTrigger

        since = self._since()
        self.log.info("Judging %s v%s against v%s from %s, soaking %.0f-%.0f s, in the triggerer",
                      self.model, self.candidate, self.baseline, time.strftime("%H:%M:%S", time.localtime(since)),
                      self.min_soak_s, self.max_soak_s)
        target = self._target()
        self.defer(trigger=CanaryAnalysisTrigger(
            target=target, analysis=self._analysis_settings(), since=since, min_soak_s=self.min_soak_s,
            max_soak_s=self.max_soak_s, step_s=self.step_s, lag_s=self.lag_s, poll_s=float(self.poke_interval),
            rollback_to=self._rollback_state(), gateway_conn_id=self.gateway_conn_id),
            method_name="execute_complete", timeout=timedelta(seconds=self.max_soak_s + 300))

    def poke(self, context):
        from airflow.sdk import PokeReturnValue

        from llm_release.analysis.canary import CanaryTarget, StepWatch, build_analysis

        since = self._since()
        if self._analysis is None:
            target = CanaryTarget(**self._target())
            self._analysis = build_analysis(target, self._analysis_settings(), since=since,
                                            step_s=self.step_s, lag_s=self.lag_s)
        verdict = self._analysis.poll()
        decision = StepWatch(self.min_soak_s, self.max_soak_s).decide(verdict, time.time() - since)
        if verdict is not None:
            self.log.info("%s after %.0f s: %s", verdict.outcome.value, time.time() - since, verdict.reason)
        if not decision:
            return False
        event = {"decision": decision, "verdict": verdict.to_dict() if verdict else None}
        return PokeReturnValue(True, self._finish(context, event))

    def execute_complete(self, context, event: dict):
        return self._finish(context, event)

    def _finish(self, context, event: dict) -> dict:
        from llm_release.routing.state import RoutingState
        from llm_release_airflow.hooks.gateway import GatewayHook

        decision = event.get("decision")
        if decision == "ERROR":
            raise PermanentTaskError(f"canary analysis could not run: {event.get('error')}")
        extra = {k: event[k] for k in ("rolled_back", "rolled_back_at", "rollback_error", "decided_at") if k in event}
        rollback = self._rollback_state()
        if decision in ("FAIL", "TIMEOUT") and rollback and not event.get("rolled_back"):
            applied = GatewayHook(gateway_conn_id=self.gateway_conn_id).get_conn().apply(RoutingState.from_dict(rollback))
            extra.update(rolled_back=applied.to_dict(), rolled_back_at=time.time())
        if extra.get("rolled_back"):
            self.log.info("Traffic rolled back: the gateway routes %s",
                          RoutingState.from_dict(extra["rolled_back"]).describe())
        result = self._report(context, event.get("verdict"), decision, extra)
        context["ti"].xcom_push(key="canary_verdict", value=result)
        if decision == "FAIL":
            raise PermanentTaskError(f"canary FAIL: {result['verdict']['reason']}")
        if decision == "TIMEOUT":
            reason = result["verdict"]["reason"] if result.get("verdict") else "no data"
            raise PermanentTaskError(f"canary still INCONCLUSIVE after {self.max_soak_s:.0f} s: {reason}")
        return result

