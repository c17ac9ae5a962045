"""The release DAG's tasks: each one transition of the core state machine (llm_release.release).

Thin: every task finds its run's release in the records (ReleaseRecords.find_run), builds the
machine for the release's environment (the `llm_release_environments` Variable, resolved
through connections), runs one transition and logs what happened. The record, not XCom, is the
release's state: a retried or restarted task reads where the release stands and resumes there.

- ReleaseBeginOperator: validate, check the artifact and the staging pass, take the lease.
- ReleaseTransitionOperator: load, probe or promote.
- ReleaseStepsOperator: every judged step, deferring to the canary judge in the triggerer; the
  trigger restores the routing itself the moment a step fails.
- ReleaseApprovalOperator: Airflow's human-in-the-loop approval with the evidence as its body;
  skipped where the environment needs none; a rejection or a timeout fails it.
- ReleaseRollbackOperator: runs when any of them failed; restores the routing, records why, and
  fails the run with that reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator

from llm_release_airflow.retry_policy import PermanentTaskError, ReleaseOperator


class ReleaseContext:
    """What every release task needs: the records, the environment, the machine, this run's release."""

    records_conn_id: str = "llm_release_records"

    def _release_context(self, context, spec_doc: dict | None = None):
        from llm_release.release.machine import ReleaseMachine
        from llm_release.release.spec import ReleaseSpec
        from llm_release_airflow.hooks.environments import load_environments
        from llm_release_airflow.hooks.records import records_url

        from llm_release.records import ReleaseRecords

        records = ReleaseRecords(records_url(self.records_conn_id, log=self.log))
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        record = records.find_run(dag_id=dag_id, run_id=run_id)
        spec = ReleaseSpec.from_dict(record.spec if record is not None else _as_dict(spec_doc))
        env = load_environments().get(spec.environment, spec.region)
        machine = ReleaseMachine(records, env, holder=f"{dag_id}/{run_id}", log=self.log)
        return machine, record, spec


def _as_dict(value) -> dict:
    if isinstance(value, str):
        return json.loads(value)
    return dict(value or {})


def _requested_by(context) -> str | None:
    run = context.get("dag_run")
    return getattr(run, "triggering_user_name", None) or (f"{run.run_type}" if run is not None else None)


class ReleaseBeginOperator(ReleaseContext, ReleaseOperator):
    """Open the release: every check before anything moves (see llm_release.release.machine.begin).

    :param release: the release spec (the DAG's params), e.g. "{{ params }}" with native rendering.
    """

    template_fields: Sequence[str] = ("release",)
    ui_color = "#c7e9c0"

    def __init__(self, *, release, records_conn_id: str = "llm_release_records", **kwargs):
        super().__init__(**kwargs)
        self.release = release
        self.records_conn_id = records_conn_id

    def execute(self, context) -> int:
        machine, record, spec = self._release_context(context, self.release)
        if record is None:
            record = machine.begin(spec, requested_by=_requested_by(context), dag_id=context["dag"].dag_id,
                                   run_id=context["run_id"], published_digest=self._published_digest(machine.env))
        self.log.info("Release %s: %s v%s to %s (%s, steps %s); stable v%s; artifact %s", record.id, spec.model,
                      spec.version, machine.env.key, spec.strategy, list(spec.steps),
                      (record.context or {}).get("baseline"), record.artifact_digest)
        return record.id

    def _published_digest(self, env):
        """The digest of the published manifest, from the artifact store the environment's region
        syncs from (the llm_release_sync_targets Variable); None when no store is configured there."""
        from airflow.sdk import Variable

        from llm_release.artifacts.manifest import Manifest
        from llm_release.artifacts.targets import parse_targets
        from llm_release_airflow.hooks.artifact_store import store_for_source

        raw = Variable.get("llm_release_sync_targets", default=None)
        if raw is None:
            return None
        targets = [t for t in parse_targets(json.loads(raw) if isinstance(raw, str) else raw) if t.region == env.region]
        if not targets:
            return None
        store = store_for_source(targets[0].source)

        def published(model: str, version: int) -> str | None:
            data = store.fetch_manifest(model, version)
            return Manifest.from_bytes(data, where=f"{store.describe()}/{model}/{version}").digest if data else None

        return published


class ReleaseTransitionOperator(ReleaseContext, ReleaseOperator):
    """One transition: `load`, `probe` or `promote`."""

    TRANSITIONS = ("load", "probe", "promote")
    ui_color = "#c6dbef"

    def __init__(self, *, transition: str, records_conn_id: str = "llm_release_records", **kwargs):
        super().__init__(**kwargs)
        if transition not in self.TRANSITIONS:
            raise ValueError(f"transition {transition!r} is not one of {self.TRANSITIONS}")
        self.transition = transition
        self.records_conn_id = records_conn_id

    def execute(self, context) -> str:
        machine, record, _ = self._release_context(context)
        if record is None:
            raise PermanentTaskError("this run has no release (the begin task did not create one)")
        _stop_if_over(machine, record)
        record = getattr(machine, self.transition)(record.id)
        self.log.info("Release %s is %s%s", record.id, record.state,
                      f": {record.reason}" if record.reason else "")
        return record.state


def _stop_if_over(machine, record) -> None:
    """A release rolled back from elsewhere (on-call's CLI, the trigger) ends the run here."""
    if record.state in ("rolling_back", "rolled_back", "refused"):
        raise PermanentTaskError(f"release {record.id} is {record.state}: {record.reason or 'rollback in progress'}")


class ReleaseStepsOperator(ReleaseContext, ReleaseOperator):
    """Every judged step of the release: shift, then wait in the triggerer while the judge
    watches; resume, record the verdict, shift again... until the steps are done (approval or
    promotion next) or a step fails (the trigger has already restored the routing)."""

    ui_color = "#fdd0a2"

    def __init__(self, *, records_conn_id: str = "llm_release_records", poll_s: float = 1.0, **kwargs):
        kwargs.setdefault("retries", 1)  # a judgement is not retried; a lost worker is (it resumes)
        super().__init__(**kwargs)
        self.records_conn_id = records_conn_id
        self.poll_s = poll_s

    def execute(self, context):
        machine, record, _ = self._release_context(context)
        if record is None:
            raise PermanentTaskError("this run has no release (the begin task did not create one)")
        return self._advance(context, machine, record)

    def _advance(self, context, machine, record):
        from llm_release_airflow.sensors.canary_trigger import CanaryAnalysisTrigger

        while True:
            _stop_if_over(machine, record)
            action = machine.next_action(record)
            if action == "shift":
                record = machine.shift(record.id)
                continue
            if action != "judge":
                self.log.info("Every step of release %s passed; next: %s", record.id, action)
                return action
            plan = machine.judge_target(record)
            self.log.info("Judging step %s of release %s (%s v%s against v%s) from %s, soaking %.0f-%.0f s",
                          plan["stage"], record.id, record.model, record.version, plan["target"]["baseline"],
                          time.strftime("%H:%M:%S", time.localtime(plan["since"])), plan["min_soak_s"],
                          plan["max_soak_s"])
            self.defer(trigger=CanaryAnalysisTrigger(
                target=plan["target"], analysis=plan["analysis"], since=plan["since"], min_soak_s=plan["min_soak_s"],
                max_soak_s=plan["max_soak_s"], poll_s=self.poll_s, rollback_to=plan["rollback_to"],
                environment=machine.env.to_dict()),
                method_name="execute_complete", timeout=timedelta(seconds=plan["max_soak_s"] + 300))

    def execute_complete(self, context, event: dict):
        from llm_release.analysis.verdict import Verdict

        machine, record, _ = self._release_context(context)
        decision = event.get("decision")
        if event.get("verdict"):
            self.log.info("Step verdict: %s\n%s", decision, Verdict.from_dict(event["verdict"]).table())
        if event.get("rolled_back"):
            self.log.info("The triggerer rolled the traffic back at once: the gateway routes %s",
                          event["rolled_back"])
        self._write_report(context, record, decision, event)
        record = machine.record_verdict(record.id, decision, event.get("verdict"), rolled_back=event.get("rolled_back"))
        if decision != "PASS":
            raise PermanentTaskError(f"release {record.id}: {record.events[-1].message if record.events else decision}")
        return self._advance(context, machine, record)


    def _write_report(self, context, record, decision: str, event: dict) -> None:
        """The step's verdict as files a person can open (JSON and a text table), beside the log."""
        from llm_release.analysis.canary import write_verdict
        from llm_release.analysis.verdict import Verdict
        from llm_release_airflow.sensors.canary_analysis import _default_report_dir

        if not event.get("verdict"):
            return
        stage = (record.context or {}).get("stage", 0)
        name = f"release-{record.id}-{record.model}-v{record.version}-step{stage + 1}"
        try:
            path = write_verdict(_default_report_dir(context), name, Verdict.from_dict(event["verdict"]), context={
                "release": record.id, "model": record.model, "candidate": record.version,
                "baseline": (record.context or {}).get("baseline"), "decision": decision,
                "dag_id": context["dag"].dag_id, "run_id": context["run_id"]})
            self.log.info("Verdict written to %s (and %s.txt)", path, path.with_suffix(""))
        except OSError as exc:  # the record and the log still carry it
            self.log.warning("could not write the verdict file: %s", exc)


class ReleaseApprovalOperator(ReleaseContext, ApprovalOperator, ReleaseOperator):
    """A person approves the final step where the environment requires it (production).

    The body is the evidence (every step's verdict table); only `approvers` from the spec may
    answer (anyone allowed on the DAG when empty); no answer within `approval_timeout_s` fails
    the task, and so does a rejection: the rollback task then restores the routing.
    """

    template_fields: Sequence[str] = ("subject", "body")

    def __init__(self, *, records_conn_id: str = "llm_release_records", **kwargs):
        kwargs.setdefault("subject", "Approve the release")
        kwargs.setdefault("retries", 0)  # an answer is final; asking again would be a new question
        super().__init__(**kwargs)
        self.records_conn_id = records_conn_id

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        machine, record, spec = self._release_context(context)
        if record is None:
            raise PermanentTaskError("this run has no release (the begin task did not create one)")
        _stop_if_over(machine, record)
        if machine.next_action(record) != "approve":
            raise AirflowSkipException(f"{machine.env.key} needs no approval for a {spec.strategy} release")
        record = machine.request_approval(record.id)
        self.subject = f"Release {record.model} v{record.version} to {machine.env.key}?"
        self.body = machine.approval_evidence(record)
        self.assigned_users = [{"id": user, "name": user} for user in spec.approvers] or None
        self.response_timeout = timedelta(seconds=spec.approval_timeout_s)
        self.log.info("Waiting up to %.1f h for %s to approve release %s", spec.approval_timeout_s / 3600,
                      ", ".join(spec.approvers) or "any user", record.id)
        return super().execute(context)

    def execute_complete(self, context, event: dict):
        from airflow.providers.standard.exceptions import HITLTimeoutError

        machine, record, _ = self._release_context(context)
        try:
            answer = super(ApprovalOperator, self).execute_complete(context, event)
        except HITLTimeoutError:
            machine.answer_approval(record.id, approved=False, by=None, timed_out=True)
            raise PermanentTaskError(f"release {record.id}: nobody approved within the timeout; rolling back") from None
        user = answer.get("responded_by_user") or {}
        by = user.get("name") or user.get("id")
        approved = answer["chosen_options"] == [self.APPROVE]
        machine.answer_approval(record.id, approved=approved, by=by)
        if not approved:
            raise PermanentTaskError(f"release {record.id}: rejected by {by}; rolling back")
        self.log.info("Release %s approved by %s", record.id, by)
        return answer


class ReleaseRollbackOperator(ReleaseContext, ReleaseOperator):
    """Runs when a release task failed: restore the routing from before the release exactly,
    finish the record with the reason, and fail so the run shows it failed and why."""

    ui_color = "#fc9272"

    def __init__(self, *, records_conn_id: str = "llm_release_records", **kwargs):
        kwargs.setdefault("trigger_rule", "one_failed")
        super().__init__(**kwargs)
        self.records_conn_id = records_conn_id

    def execute(self, context):
        machine, record, _ = self._release_context(context)
        if record is None:
            raise PermanentTaskError("the release was refused before it was recorded; see the begin task's log")
        if record.state not in ("promoted", "passed", "rolled_back", "refused"):
            reason = next((e.message for e in reversed(record.events) if e.to_state == "rolling_back"), None)
            record = machine.rollback(record.id, reason or f"a release task failed while {record.state}")
        seconds = next((e.data.get("seconds") for e in reversed(record.events) if e.kind == "finished" and e.data), None)
        self.log.info("Release %s %s: %s%s", record.id, record.outcome, record.reason,
                      f" (routing restored in {seconds:.2f} s)" if seconds is not None else "")
        raise PermanentTaskError(f"release {record.id} {record.outcome}: {record.reason}")
