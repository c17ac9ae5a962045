"""CanaryAnalysisTrigger: the canary judge polled in the triggerer, so a soak holds no worker.

Thin over llm_release.analysis.canary: every `poll_s` it takes one look (gateway counts,
streaming probes, readiness) in a thread and asks StepWatch whether the step is decided.
On FAIL (or an analysis that stays inconclusive past the step's limit) it puts the traffic
back itself, right there, when it was given a routing to restore: the rollback does not wait
for the scheduler to resume the task and start another one, which would add seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from airflow.triggers.base import BaseTrigger, TriggerEvent

CLASSPATH = "llm_release_airflow.sensors.canary_trigger.CanaryAnalysisTrigger"
LOG_EVERY_S = 30.0


class CanaryAnalysisTrigger(BaseTrigger):
    def __init__(self, *, target: dict, analysis: dict | None, since: float, min_soak_s: float, max_soak_s: float,
                 step_s: float = 1.0, lag_s: float = 2.0, poll_s: float = 1.0, rollback_to: dict | None = None,
                 gateway_conn_id: str | None = None, environment: dict | None = None):
        super().__init__()
        self.target = target
        self.analysis = analysis or {}
        self.since = since
        self.min_soak_s = min_soak_s
        self.max_soak_s = max_soak_s
        self.step_s = step_s
        self.lag_s = lag_s
        self.poll_s = poll_s
        self.rollback_to = rollback_to
        self.gateway_conn_id = gateway_conn_id
        self.environment = environment  # an environment spec: its router restores the routing

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"target": self.target, "analysis": self.analysis, "since": self.since,
                           "min_soak_s": self.min_soak_s, "max_soak_s": self.max_soak_s, "step_s": self.step_s,
                           "lag_s": self.lag_s, "poll_s": self.poll_s, "rollback_to": self.rollback_to,
                           "gateway_conn_id": self.gateway_conn_id, "environment": self.environment}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from llm_release.analysis.canary import CanaryTarget, StepWatch, build_analysis

        watch = StepWatch(self.min_soak_s, self.max_soak_s)
        try:
            analysis = await asyncio.to_thread(build_analysis, CanaryTarget(**self.target), self.analysis,
                                               since=self.since, step_s=self.step_s, lag_s=self.lag_s)
        except Exception as exc:  # noqa: BLE001 - a bad spec ends the analysis with its message
            yield TriggerEvent({"decision": "ERROR", "error": f"{type(exc).__name__}: {exc}", "verdict": None})
            return
        router = None
        if self.rollback_to:
            # Reach the gateway now, not when the verdict comes: the first connection lookup in a
            # triggerer process can take seconds, and a rollback must not wait for it.
            router = await asyncio.to_thread(self._router)
        last_outcome, last_log = None, 0.0
        while True:
            verdict = await asyncio.to_thread(analysis.poll)
            now = time.time()
            decision = watch.decide(verdict, now - self.since)
            if verdict is not None and (verdict.outcome != last_outcome or now - last_log >= LOG_EVERY_S):
                self.log.info("%s after %.0f s: %s", verdict.outcome.value, now - self.since, verdict.reason)
                last_outcome, last_log = verdict.outcome, now
            if decision:
                event = {"decision": decision, "decided_at": now,
                         "verdict": verdict.to_dict() if verdict is not None else None}
                if decision in ("FAIL", "TIMEOUT") and self.rollback_to:
                    event.update(await asyncio.to_thread(self._roll_back, router))
                yield TriggerEvent(event)
                return
            await asyncio.sleep(self.poll_s)

    def _router(self):
        """The gateway's router, or None (then the task rolls back when it resumes)."""
        from llm_release_airflow.hooks.gateway import GatewayHook

        try:
            if self.environment:
                from llm_release.environments import Environment

                return Environment.from_dict(self.environment).router_instance()
            return GatewayHook(gateway_conn_id=self.gateway_conn_id).get_conn()
        except Exception as exc:  # noqa: BLE001 - the sensor rolls back on the worker instead
            self.log.error("cannot reach the gateway for a rollback from the triggerer: %s", exc)
            return None

    def _roll_back(self, router) -> dict:
        """Restore the saved routing now; report what happened (the task finishes the job if this failed)."""
        from llm_release.routing.state import RoutingState

        try:
            router = router or self._router()
            if router is None:
                raise RuntimeError("no router")
            applied = router.apply(RoutingState.from_dict(self.rollback_to))
        except Exception as exc:  # noqa: BLE001 - the sensor retries the rollback on the worker
            self.log.error("rollback from the triggerer failed (the task will retry it): %s", exc)
            return {"rolled_back": None, "rollback_error": f"{type(exc).__name__}: {exc}"}
        self.log.info("rolled back: the gateway routes %s", applied.describe())
        return {"rolled_back": applied.to_dict(), "rolled_back_at": time.time()}
