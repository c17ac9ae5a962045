"""GateEvaluationOperator: one look at the gates now, e.g. before traffic is raised.

It judges the canary over the last `window_s` seconds of gateway history (or from `since`),
with the candidate's readiness and GPU memory read now, and fails the task on FAIL (and on
INCONCLUSIVE unless told otherwise: a gate that cannot tell is not a pass). Thin over
llm_release.analysis.canary; the verdict goes to the log as a table, to a file and to XCom.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from llm_release_airflow.retry_policy import PermanentTaskError, ReleaseOperator
from llm_release_airflow.sensors.canary_analysis import CanaryTargetMixin, _flag


class GateEvaluationOperator(CanaryTargetMixin, ReleaseOperator):
    """Evaluate the canary's gates and its comparison with the baseline once.

    :param model: the model name at the gateway.
    :param candidate: the version under analysis; :param baseline: the stable version.
    :param window_s: judge the last this many seconds (unless `since` is given).
    :param since: judge from this time (epoch seconds), e.g. the start of the step.
    :param analysis: judge settings (thresholds, alpha/beta, disabled checks with reasons).
    :param fail_on_inconclusive: fail the task when the verdict is INCONCLUSIVE (default True).
    """

    template_fields: Sequence[str] = ("model", "candidate", "baseline", "shadow", "analysis", "since", "window_s",
                                      "report_dir")
    ui_color = "#fdae6b"

    def __init__(self, *, model: str, candidate, baseline, shadow=False, analysis: dict | None = None,
                 window_s: float = 300.0, since=None, step_s: float = 1.0, fail_on_inconclusive=True,
                 report_dir: str | None = None, triton_model: str | None = None,
                 prometheus_conn_id: str = "prometheus_default", triton_conn_id: str | None = "triton_default",
                 **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.candidate = candidate
        self.baseline = baseline
        self.shadow = shadow
        self.analysis = analysis
        self.window_s = window_s
        self.since = since
        self.step_s = step_s
        self.fail_on_inconclusive = fail_on_inconclusive
        self.report_dir = report_dir
        self.triton_model = triton_model
        self.prometheus_conn_id = prometheus_conn_id
        self.gateway_conn_id = None  # history only: streaming probes are taken live, by the sensor
        self.triton_conn_id = triton_conn_id

    def execute(self, context) -> dict:
        from llm_release.analysis.canary import CanaryTarget, build_analysis
        from llm_release.errors import SpecError

        now = time.time()
        since = float(self.since) if self.since not in (None, "", "None") else now - float(self.window_s)
        if since >= now:
            raise SpecError("since/window_s", f"the window ends before it starts ({since:.0f} >= {now:.0f})",
                            "give a positive window_s or a since in the past")
        analysis = build_analysis(CanaryTarget(**self._target(probe=False)), self._analysis_settings(), since=since,
                                  step_s=self.step_s, lag_s=0.0, probe=False, clock=lambda: now)
        verdict = analysis.poll()
        outcome = verdict.outcome.value if verdict is not None else "INCONCLUSIVE"
        result = self._report(context, verdict.to_dict() if verdict else None, outcome)
        if outcome == "FAIL":
            raise PermanentTaskError(f"gates FAIL: {verdict.reason}")
        if outcome == "INCONCLUSIVE" and _flag(self.fail_on_inconclusive):
            raise PermanentTaskError("gates INCONCLUSIVE: " + (verdict.reason if verdict else "no whole interval of data"))
        return result
