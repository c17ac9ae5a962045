"""Emergency rollback: all traffic of a model back on a stable version, in one action.

Works with Airflow down and with the records database down: it goes straight to the
environment's router and Triton. The records are read when reachable (to find the version that
was stable before the release in flight, and to close that release as rolled back) and written
afterwards; when they are not reachable the rollback still happens and the result says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from llm_release.errors import LLMReleaseError, SpecError
from llm_release.routing.state import RoutingState

LOG = logging.getLogger("llm_release.release.emergency")


@dataclass(frozen=True)
class EmergencyRollback:
    model: str
    environment: str
    previous: RoutingState | None
    applied: RoutingState
    seconds: float
    release_id: int | None  # the release in flight it closed, if any
    recorded: bool
    records_problem: str | None

    def to_dict(self) -> dict:
        return {"model": self.model, "environment": self.environment,
                "previous": self.previous.to_dict() if self.previous else None, "applied": self.applied.to_dict(),
                "seconds": self.seconds, "release_id": self.release_id, "recorded": self.recorded,
                "records_problem": self.records_problem}


def _target_from_records(records, model: str, env_key: str, env_name: str):
    """(routing to restore, release in flight) from the records, or (None, None)."""
    active = [r for r in records.active(model=model, environment=env_name) if r.region == env_key.split("/")[1]]
    for record in active:
        before = (record.context or {}).get("routing_before")
        if before:
            return RoutingState.from_dict(before), record
    for record in records.history(model, environment=env_name, limit=20):
        if record.outcome == "promoted" and (record.context or {}).get("routing_before"):
            return RoutingState.from_dict(record.context["routing_before"]), None
    return None, None


def emergency_rollback(env, model: str, *, to_version: int | None = None, records=None, actor: str | None = None,
                       reason: str | None = None, log: logging.Logger = LOG) -> EmergencyRollback:
    """Route `model` back to `to_version` (or to the routing before the release in flight / the
    last promotion, from the records), after checking that version is READY. No probe: the
    version served before, and every second counts."""
    started = time.monotonic()
    router, served = env.router_instance(), env.served_versions()
    current = router.get_state(model)
    target, release, problem = None, None, None
    if to_version is None and records is not None:
        try:
            target, release = _target_from_records(records, model, env.key, env.name)
        except LLMReleaseError as exc:
            problem = f"records unreachable: {exc}"
            log.warning("%s; rolling back without them", problem)
    if to_version is not None:
        target = RoutingState(model, {to_version: 100})
    if target is None:
        raise SpecError("--to", f"no release of {model} in {env.key} says what was stable before"
                        + (f" ({problem})" if problem else ""),
                        f"name the version to roll back to (now: {current.describe() if current else 'no route'})")
    ready = set(served.ready_versions(model))
    missing = sorted(target.versions - ready)
    if missing:
        raise SpecError("--to", f"{model} v{missing} is not READY in {env.key} (READY: {sorted(ready)})",
                        "load it first, or roll back to a READY version")
    applied = router.apply(target) if current != target else current
    seconds = round(time.monotonic() - started, 3)
    log.info("%s in %s: %s -> %s in %.2f s", model, env.key, current.describe() if current else "no route",
             applied.describe(), seconds)
    recorded = False
    if records is not None and problem is None:
        why = reason or f"emergency rollback by {actor or 'on-call'}: routing restored to {applied.describe()}"
        try:
            if release is None:
                release = next((r for r in records.active(model=model, environment=env.name)
                                if r.region == env.region), None)
            if release is not None:
                records.finish(release.id, state="rolled_back", outcome="rolled_back", reason=why, actor=actor,
                               data={"routing": applied.to_dict(), "seconds": seconds, "emergency": True})
            else:
                created = records.create_release(
                    model=model, version=max(applied.weights, key=applied.weights.get), environment=env.name,
                    region=env.region, strategy="emergency_rollback", spec={}, requested_by=actor,
                    context={"routing_before": current.to_dict() if current else None})
                records.finish(created.id, state="rolled_back", outcome="rolled_back", reason=why, actor=actor,
                               data={"routing": applied.to_dict(), "seconds": seconds, "emergency": True})
            recorded = True
        except LLMReleaseError as exc:
            problem = f"records unreachable: {exc}"
            log.warning("rolled back, but %s", problem)
    return EmergencyRollback(model, env.key, current, applied, seconds, release.id if release else None, recorded,
                             problem)
