"""A release as one state machine, read top to bottom, persisted after every transition.

    pending ─load─▶ loaded ─probe─▶ probed ─shift─▶ shifted ─judge─▶ judged ─┬─shift─▶ shifted ...
                                                                            ├─(approval required) ▶ awaiting_approval ─approve─▶ approved ─┐
                                                                            └──────────────────────────────────────────────────────────────┴─promote─▶ promoted | passed
    any state that is not final ─rollback─▶ rolling_back ─▶ rolled_back          refused: a check failed before anything moved

Every transition is a method here: it reads the release's record, checks the state it starts
from, does its work, and writes the new state with a compare-and-set (ReleaseRecords.transition).
A task that dies mid-transition is retried into the same method: the record says where the
release stands, and each step is idempotent (loading a loaded version, applying a routing that is
already in force, and restoring a routing that is already restored change nothing). The Airflow
DAG runs one transition per task (a deferred step resumes as one transition each time); the CLI
and the rehearsal drive the same methods in a loop (`drive`).

What a rollback restores is the routing read from the gateway before the first shift, kept in
the record: header routes and mirrors of the stable routing come back exactly.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

from llm_release.errors import LLMReleaseError, SpecError
from llm_release.release.spec import ReleaseSpec
from llm_release.routing.state import RoutingState

LOG = logging.getLogger("llm_release.release")

PENDING, LOADED, PROBED, SHIFTED, JUDGED = "pending", "loaded", "probed", "shifted", "judged"
AWAITING_APPROVAL, APPROVED = "awaiting_approval", "approved"
PROMOTED, PASSED, ROLLING_BACK, ROLLED_BACK, REFUSED = "promoted", "passed", "rolling_back", "rolled_back", "refused"
FINAL = (PROMOTED, PASSED, ROLLED_BACK, REFUSED)
LEASE_MARGIN_S = 900.0
GATEWAY_FLUSH_S = 2.0  # Envoy flushes its stats every second and Prometheus scrapes every second


class ReleaseRefused(LLMReleaseError):
    """A check before any traffic moved said no (not published, never passed staging, ...)."""

    permanent = True


class ReleaseFailed(LLMReleaseError):
    """The release was rolled back (a FAIL, a rejection, a timeout); the message says why."""

    permanent = True


@dataclass(frozen=True)
class Stage:
    """One judged step: the routing it applies and how the judge reads it."""

    index: int
    name: str
    routing: RoutingState
    shadow: bool = False  # the candidate is judged on mirrored copies


def plan_stages(spec: ReleaseSpec, stable: RoutingState, baseline: int) -> tuple[list[Stage], RoutingState]:
    """The judged stages of a release, and the routing it ends with when every stage passes."""
    cand = spec.version
    if spec.strategy == "canary":
        stages = [Stage(i, f"{step}%", stable.with_weights({baseline: 100 - step, cand: step}))
                  for i, step in enumerate(spec.steps) if step < 100]
        return stages, RoutingState(stable.model, {cand: 100})
    if spec.strategy == "blue_green":
        return [Stage(0, "mirror 100%", stable.with_mirror(cand, 100), shadow=True)], RoutingState(stable.model, {cand: 100})
    if spec.strategy == "shadow":
        return [Stage(i, f"mirror {p}%", stable.with_mirror(cand, p), shadow=True)
                for i, p in enumerate(spec.steps)], stable
    # ab: the B arm by header; the split of everything else stays as it is.
    routes = dict(stable.header_routes) if stable.header == spec.ab_header else {}
    routes[spec.ab_value] = cand
    return [Stage(0, f"A/B {spec.ab_header}={spec.ab_value}", stable.with_header_routes(spec.ab_header, routes))], stable


def baseline_of(record) -> int | None:
    """The stable version a release is compared with and rolled back to (read under its lease)."""
    return record.baseline_version or (record.context or {}).get("baseline")


def default_holder() -> str:
    """Who holds a lease taken outside Airflow: user@host:pid."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}:{os.getpid()}"


class ReleaseMachine:
    """The transitions of releases in one environment, against its router, Triton and records.

    :param records: llm_release.records.ReleaseRecords.
    :param env: llm_release.environments.Environment (router, served versions, metrics).
    :param holder: who drives these releases (an Airflow run "dag/run", or default_holder()).
    """

    def __init__(self, records, env, *, holder: str, log: logging.Logger = LOG, router=None, served=None):
        self.records = records
        self.env = env
        self.holder = holder
        self.log = log
        self.router = router or env.router_instance()
        self.served = served or env.served_versions()

    # -- reading ------------------------------------------------------------------------------
    def spec_of(self, record) -> ReleaseSpec:
        return ReleaseSpec.from_dict(record.spec)

    def stages_of(self, record) -> tuple[list[Stage], RoutingState]:
        before = RoutingState.from_dict(record.context["routing_before"])
        return plan_stages(self.spec_of(record), before, baseline_of(record))

    def next_action(self, record) -> str | None:
        """What the release needs next: load, probe, shift, judge, approve, promote, rollback, or None (final)."""
        state = record.state
        if state in FINAL:
            return None
        if state == ROLLING_BACK:
            return "rollback"
        if state in (PENDING, LOADED, SHIFTED):
            return {PENDING: "load", LOADED: "probe", SHIFTED: "judge"}[state]
        if state in (PROBED, JUDGED):
            stages, _ = self.stages_of(record)
            if record.context["stage"] + 1 < len(stages):
                return "shift"
            # Every stage judged (or none asked for: steps [100] is a switch after the probe).
            return "approve" if self.needs_approval(record) else "promote"
        if state == AWAITING_APPROVAL:
            return "approve"
        if state == APPROVED:
            return "promote"
        raise SpecError("state", f"release {record.id} is in unknown state {state!r}", "roll it back")

    def needs_approval(self, record) -> bool:
        """A person approves the final step in an environment that says so, unless nothing
        reaches clients at the end (shadow, A/B leave the routing as it was)."""
        return self.env.approval_required and self.spec_of(record).strategy in ("canary", "blue_green")

    # -- begin --------------------------------------------------------------------------------
    def begin(self, spec: ReleaseSpec, *, requested_by: str | None = None, dag_id: str | None = None,
              run_id: str | None = None, published_digest: Callable[[str, int], str | None] | None = None):
        """Create the record, take the lease, run every check before anything moves.

        A retried first task finds the record its run created and returns it. A failed check
        leaves a record with outcome "refused" and raises ReleaseRefused naming the field.
        """
        if dag_id and run_id:
            existing = self.records.find_run(dag_id=dag_id, run_id=run_id)
            if existing is not None:
                self.log.info("release %s of this run already exists (state %s): resuming", existing.id, existing.state)
                return existing
        if spec.environment != self.env.name or (spec.region and spec.region != self.env.region):
            raise SpecError("environment", f"the spec names {spec.environment}/{spec.region or '*'} but this is "
                                           f"{self.env.key}", "drive the release in its own environment")
        try:
            digest = self._check_artifact(spec, published_digest)
        except SpecError as exc:
            self._refuse(spec, exc, requested_by=requested_by, dag_id=dag_id, run_id=run_id)
        record = self.records.create_release(
            model=spec.model, version=spec.version, environment=self.env.name, region=self.env.region,
            strategy=spec.strategy, spec=spec.to_dict(), artifact_digest=digest, requested_by=requested_by,
            dag_id=dag_id, run_id=run_id, context={"stage": -1, "artifact_digest": digest})
        from llm_release.records import LeaseHeld

        try:
            self._take_lease(record.id, spec)
            # Read under the lease: a release that held it may just have changed the routing.
            before, baseline = self._check_routing(spec)
        except (SpecError, LeaseHeld) as exc:
            self._refuse(spec, exc, record=record)
        return self.records.transition(
            record.id, expected=PENDING, to=PENDING, message=f"checks passed: stable v{baseline}, routing {before.describe()}",
            data={"artifact_digest": digest, "baseline": baseline, "routing_before": before.to_dict()},
            context={"stage": -1, "routing_before": before.to_dict(), "baseline": baseline, "artifact_digest": digest})

    def _refuse(self, spec: ReleaseSpec, exc: Exception, *, record=None, **who):
        """Record the refusal (every release leaves a record) and raise ReleaseRefused."""
        from llm_release.records import LeaseHeld

        if record is None:
            record = self.records.create_release(
                model=spec.model, version=spec.version, environment=self.env.name, region=self.env.region,
                strategy=spec.strategy, spec=spec.to_dict(), artifact_digest=spec.artifact_digest, context={}, **who)
        self.records.finish(record.id, state=REFUSED, outcome="refused", reason=str(exc))
        if not isinstance(exc, LeaseHeld):
            self._release_lease(spec)
        raise ReleaseRefused(f"{spec.model} v{spec.version} to {self.env.key} refused: {exc}") from exc

    def _check_artifact(self, spec: ReleaseSpec, published_digest) -> str:
        """The digest this release is about: published, installed, and as named, all the same."""
        from llm_release.artifacts.manifest import Manifest

        published = published_digest(spec.model, spec.version) if published_digest else None
        installed = None
        repo = self.env.triton.model_repository
        if repo and (os.path.isdir(os.path.join(repo, spec.model, str(spec.version)))):
            installed = Manifest.of_engine_dir(os.path.join(repo, spec.model, str(spec.version))).digest
        if published is None and installed is None:
            raise SpecError("version", f"{spec.model} v{spec.version} is not published"
                            + (" and not installed in " + repo if repo else ""),
                            "publish it first (llm-release publish), or name a published version")
        if published and installed and published != installed:
            raise SpecError("artifact_digest", f"v{spec.version} installed in {repo} is {installed}, the published "
                            f"one is {published}", "sync the model repository from the artifact store")
        digest = published or installed
        if spec.artifact_digest and spec.artifact_digest != digest:
            raise SpecError("artifact_digest", f"{spec.artifact_digest} is not {spec.model} v{spec.version} ({digest})",
                            "name the digest of the published version, or leave it empty")
        required = self.env.requires_passed
        if required and self.records.passed(model=spec.model, artifact_digest=digest, environment=required) is None:
            raise SpecError("environment", f"{spec.model} v{spec.version} ({digest[:19]}...) never passed {required}",
                            f"release it to {required} first: environments are never skipped")
        return digest

    def _check_routing(self, spec: ReleaseSpec) -> tuple[RoutingState, int]:
        before = self.router.get_state(spec.model)
        if before is None:
            raise SpecError("model", f"the gateway has no route for {spec.model}",
                            "route its first version with `llm-release traffic switch`, then release the next")
        baseline = spec.baseline or max(before.weights.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if before.weights.get(baseline, 0) == 0:
            raise SpecError("baseline", f"v{baseline} takes no traffic now ({before.describe()})",
                            "name the version serving now, or leave it empty")
        if before.weights.get(spec.version) == 100:
            raise SpecError("version", f"v{spec.version} already takes all traffic of {spec.model}", "nothing to release")
        if spec.strategy == "ab" and before.header_routes and before.header != spec.ab_header:
            # One header per model: a second one would drop the routes others rely on.
            raise SpecError("ab_header", f"{spec.model}'s routing already routes by {before.header} "
                                         f"({before.describe()})", f"use ab_header {before.header!r}")
        return before, baseline

    def _lease_ttl(self, spec: ReleaseSpec) -> float:
        return max(spec.max_soak_s, spec.approval_timeout_s) + LEASE_MARGIN_S

    def _take_lease(self, release_id: int, spec: ReleaseSpec) -> None:
        from llm_release.records import LeaseHeld

        deadline = time.monotonic() + spec.lease_wait_s
        while True:
            try:
                self.records.acquire_lease(model=spec.model, environment=self.env.key, holder=self.holder,
                                           release_id=release_id, ttl_s=self._lease_ttl(spec))
                return
            except LeaseHeld as held:
                if time.monotonic() >= deadline:
                    raise
                self.log.info("waiting for %s (holds the release lease of %s in %s)", held.holder, spec.model,
                              self.env.key)
                time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))

    def _renew(self, record) -> None:
        self.records.renew_lease(model=record.model, environment=self.env.key, holder=self.holder,
                                 ttl_s=self._lease_ttl(self.spec_of(record)))

    def _release_lease(self, spec_or_record) -> None:
        try:
            self.records.release_lease(model=spec_or_record.model, environment=self.env.key, holder=self.holder)
        except LLMReleaseError as exc:  # it expires by itself
            self.log.warning("could not release the lease of %s: %s", spec_or_record.model, exc)

    # -- transitions --------------------------------------------------------------------------
    def load(self, release_id: int):
        """Load the candidate beside the stable version (never unloads anything)."""
        record = self.records.get(release_id)
        if record.state != PENDING:
            return record
        self._renew(record)
        started = time.monotonic()
        ready = self.served.load(record.model, record.version)
        if record.version not in ready:
            raise SpecError("version", f"{record.model} v{record.version} did not become READY (READY: {ready})",
                            "see Triton's log")
        self.log.info("%s v%s is READY beside v%s (READY: %s) after %.1f s", record.model, record.version,
                      baseline_of(record), ready, time.monotonic() - started)
        return self.records.transition(release_id, expected=PENDING, to=LOADED,
                                       message=f"v{record.version} READY beside v{baseline_of(record)}",
                                       data={"ready": ready, "seconds": round(time.monotonic() - started, 3)})

    def probe(self, release_id: int, *, warm_up: int = 20):
        """A real inference against exactly the candidate, then a warm-up through the gateway's
        pinned path, so the first judged step measures the version and not its first seconds."""
        from llm_release.loadgen import send_generate_requests

        record = self.records.get(release_id)
        if record.state != LOADED:
            return record
        result = self.served.probe(record.model, record.version)
        warmed = None
        if self.env.gateway_url and warm_up:
            url = f"{self.env.gateway_url}/v2/models/{record.model}/versions/{record.version}/generate"
            warmed = send_generate_requests(url, count=warm_up, concurrency=2)
            if warmed.errors:  # a new version that fails its first requests gets no traffic
                raise SpecError("version", f"{record.model} v{record.version} failed {warmed.errors} of {warm_up} "
                                           f"warm-up requests through the gateway ({dict(warmed.status_codes)})",
                                "see Triton's log")
        self.log.info("probe of %s v%s answered in %.0f ms%s", record.model, record.version, result.latency_ms,
                      f"; {warm_up} warm-up requests through the gateway" if warmed else "")
        return self.records.transition(release_id, expected=LOADED, to=PROBED,
                                       message=f"probe answered in {result.latency_ms:.0f} ms",
                                       data={"latency_ms": result.latency_ms, "warm_up": warm_up if warmed else 0})

    def shift(self, release_id: int):
        """Apply the next stage's routing (after a readiness check of every version it routes to)."""
        from llm_release.routing.shift import check_ready

        record = self.records.get(release_id)
        if record.state not in (PROBED, JUDGED):
            return record
        self._renew(record)
        stages, _ = self.stages_of(record)
        stage = stages[record.context["stage"] + 1]
        check_ready(self.served, stage.routing, probe=False)
        applied = self.router.apply(stage.routing)
        if stage.index == 0:
            self._warm_cluster(record)
        since = time.time()
        self.log.info("%s step %d/%d (%s): the gateway routes %s", record.model, stage.index + 1, len(stages),
                      stage.name, applied.describe())
        self.records.add_event(release_id, "step", f"step {stage.index + 1}/{len(stages)} {stage.name}: {applied.describe()}",
                               data={"stage": stage.index, "name": stage.name, "routing": applied.to_dict()})
        return self.records.transition(release_id, expected=record.state, to=SHIFTED, message=f"step {stage.name}",
                                       context={**record.context, "stage": stage.index, "since": since})

    def _warm_cluster(self, record, requests: int = 10) -> None:
        """The first step gives the candidate its own gateway cluster; its first requests open
        that cluster's connections and answer slower, and so do its first streamed generations.
        Send a few of both through the pinned path and let
        the gateway's counters flush before the step's clock starts, so the judge sees the
        version and not a cold connection pool."""
        if not self.env.gateway_url:
            return
        from llm_release.loadgen import send_generate_requests

        from llm_release.analysis.probe import probe_versions

        send_generate_requests(f"{self.env.gateway_url}/v2/models/{record.model}/versions/{record.version}/generate",
                               count=requests, concurrency=2)
        probe_versions(self.env.gateway_url, record.model, [record.version], count=requests)  # streaming, too
        time.sleep(GATEWAY_FLUSH_S)

    def judge_target(self, record) -> dict:
        """What the canary judge needs for the current step: target, settings, start and soak limits."""
        stages, _ = self.stages_of(record)
        stage = stages[record.context["stage"]]
        spec = self.spec_of(record)
        per_release = self.env.triton.topology == "model_per_release"
        target = {"model": record.model, "candidate": record.version, "baseline": baseline_of(record),
                  "prometheus_url": self.env.prometheus_url, "gateway_url": self.env.gateway_url,
                  "triton_url": self.served_triton_url(record.version),
                  "triton_model": self.env.triton_model(record.model, record.version),
                  "triton_version": 1 if per_release else None, "shadow": stage.shadow}
        settings = dict(spec.analysis)
        settings["disabled"] = {**self.env.disabled_checks, **(settings.get("disabled") or {})}
        return {"target": target, "analysis": settings, "since": record.context["since"],
                "min_soak_s": spec.min_soak_s, "max_soak_s": spec.max_soak_s, "stage": stage.name,
                "rollback_to": record.context["routing_before"]}

    def served_triton_url(self, version: int) -> str:
        return self.env.triton.deployments.get(version, self.env.triton.url)

    def record_verdict(self, release_id: int, decision: str, verdict: dict | None, *, rolled_back: dict | None = None):
        """The judge decided the current step: PASS moves on; FAIL, TIMEOUT or ERROR rolls back."""
        record = self.records.get(release_id)
        if record.state != SHIFTED:
            return record
        stages, _ = self.stages_of(record)
        stage = stages[record.context["stage"]]
        reason = (verdict or {}).get("reason") or decision
        self.records.add_event(release_id, "verdict", f"step {stage.name}: {decision}: {reason}",
                               data={"stage": stage.index, "decision": decision, "verdict": verdict,
                                     "rolled_back": rolled_back})
        if decision == "PASS":
            return self.records.transition(release_id, expected=SHIFTED, to=JUDGED, message=f"step {stage.name} passed")
        why = {"FAIL": "the judge failed", "TIMEOUT": "the judge stayed inconclusive past max_soak_s at",
               "ERROR": "the analysis could not run at"}.get(decision, decision)
        return self.records.transition(release_id, expected=SHIFTED, to=ROLLING_BACK,
                                       message=f"{why} step {stage.name}: {reason}")

    def approval_evidence(self, record) -> str:
        """Markdown for the approver: every step, its verdict, the judge's numbers, the routing now."""
        from llm_release.analysis.verdict import Verdict

        spec = self.spec_of(record)
        _, final = self.stages_of(record)
        lines = [f"**{record.model} v{record.version}** to **{self.env.key}** ({spec.strategy}), stable "
                 f"v{baseline_of(record)}, artifact `{record.artifact_digest}`.", "",
                 f"Approving routes **{final.describe()}**; rejecting or not answering within "
                 f"{spec.approval_timeout_s / 3600:.1f} h restores **{RoutingState.from_dict(record.context['routing_before']).describe()}**.",
                 ""]
        from urllib.parse import quote

        clusters = f"{record.model}_v({baseline_of(record)}|{record.version})"
        rate = (f'sum by (envoy_cluster_name, envoy_response_code_class) '
                f'(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"{clusters}"}}[1m]))')
        lines += [f"[Responses per version and class in Prometheus]({self.env.prometheus_url}/graph?g0.expr="
                  f"{quote(rate)}&g0.tab=0&g0.range_input=1h) · release record {record.id}: "
                  f"`llm-release history --model {record.model} --env {self.env.name}`", ""]
        for event in record.events:
            if event.kind != "verdict":
                continue
            lines.append(f"### {event.message}")
            doc = (event.data or {}).get("verdict")
            if doc:
                lines += ["```", Verdict.from_dict(doc).table(), "```"]
        return "\n".join(lines)

    def request_approval(self, release_id: int):
        record = self.records.get(release_id)
        if record.state not in (PROBED, JUDGED) or self.next_action(record) != "approve":
            return record
        self._renew(record)
        return self.records.transition(release_id, expected=record.state, to=AWAITING_APPROVAL,
                                       message="every step passed; waiting for approval")

    def answer_approval(self, release_id: int, *, approved: bool, by: str | None, timed_out: bool = False,
                        comment: str | None = None):
        record = self.records.get(release_id)
        if record.state != AWAITING_APPROVAL:
            return record
        answer = "approved" if approved else ("timed out" if timed_out else "rejected")
        self.records.add_event(release_id, "approval", f"{answer} by {by or 'nobody'}" + (f": {comment}" if comment else ""),
                               actor=by, data={"approved": approved, "timed_out": timed_out, "comment": comment})
        if approved:
            return self.records.transition(release_id, expected=AWAITING_APPROVAL, to=APPROVED,
                                           message=f"approved by {by}", actor=by)
        return self.records.transition(release_id, expected=AWAITING_APPROVAL, to=ROLLING_BACK, actor=by,
                                       message="approval timed out" if timed_out else f"rejected by {by or 'an approver'}")

    def promote(self, release_id: int):
        """The final routing: all traffic to the candidate (canary, blue-green), or the routing
        restored as it was (shadow, A/B: an evaluation). The old version stays loaded."""
        record = self.records.get(release_id)
        if record.state in FINAL:
            return record
        action = self.next_action(record)
        if action != "promote":
            raise SpecError("state", f"release {release_id} is {record.state}, not ready to promote (next: {action})",
                            "let the release run its steps first")
        _, final = self.stages_of(record)
        applied = self.router.apply(final)
        spec = self.spec_of(record)
        outcome, state = ("promoted", PROMOTED) if spec.strategy in ("canary", "blue_green") else ("passed", PASSED)
        reason = (f"every step passed; the gateway routes {applied.describe()}" if outcome == "promoted"
                  else f"every step passed; no client saw v{record.version}; routing back to {applied.describe()}")
        self.log.info("%s v%s %s: %s", record.model, record.version, outcome, reason)
        done = self.records.finish(release_id, state=state, outcome=outcome, reason=reason,
                                   data={"routing": applied.to_dict()})
        self._release_lease(record)
        return done

    def rollback(self, release_id: int, reason: str | None = None, *, actor: str | None = None):
        """Restore the routing from before the first shift, exactly; leave the candidate loaded or
        unload it (spec.on_failure); finish the record. Safe to repeat."""
        record = self.records.get(release_id)
        if record.state in FINAL:
            return record
        if record.state != ROLLING_BACK:
            record = self.records.transition(release_id, expected=record.state, to=ROLLING_BACK, actor=actor,
                                             message=reason or "rollback requested")
        started = time.monotonic()
        before = record.context.get("routing_before")
        restored = None
        if before:
            restored = self.router.apply(RoutingState.from_dict(before))
            self.log.info("rolled %s back: the gateway routes %s again", record.model, restored.describe())
        spec = self.spec_of(record)
        if spec.on_failure == "unload" and record.version != baseline_of(record):
            self.served.unload(record.model, record.version)
            self.log.info("unloaded %s v%s", record.model, record.version)
        why = reason or next((e.message for e in reversed(record.events) if e.to_state == ROLLING_BACK), "rolled back")
        done = self.records.finish(release_id, state=ROLLED_BACK, outcome="rolled_back", reason=why, actor=actor,
                                   data={"routing": restored.to_dict() if restored else None,
                                         "seconds": round(time.monotonic() - started, 3),
                                         "unloaded": spec.on_failure == "unload"})
        self._release_lease(record)
        return done


def drive(machine: ReleaseMachine, release_id: int, *, approve: Callable[[object, str], tuple[bool, str]] | None = None,
          poll_s: float = 1.0, on_look: Callable | None = None):
    """Run a release to its end in this process (CLI, rehearsal, tests): the same transitions
    the DAG runs task by task, the judge polled here. Returns the final record."""
    from llm_release.analysis.canary import CanaryTarget, StepWatch, build_analysis

    while True:
        record = machine.records.get(release_id)
        action = machine.next_action(record)
        if action is None:
            return record
        try:
            if action == "judge":
                plan = machine.judge_target(record)
                analysis = build_analysis(CanaryTarget(**plan["target"]), plan["analysis"], since=plan["since"])
                watch = StepWatch(plan["min_soak_s"], plan["max_soak_s"])
                while True:
                    verdict = analysis.poll()
                    decision = watch.decide(verdict, time.time() - plan["since"])
                    if on_look:
                        on_look(record, verdict, decision)
                    if decision:
                        break
                    time.sleep(poll_s)
                machine.record_verdict(release_id, decision, verdict.to_dict() if verdict else None)
            elif action == "approve":
                if record.state != AWAITING_APPROVAL:
                    record = machine.request_approval(release_id)
                if approve is None:
                    machine.answer_approval(release_id, approved=False, by=None, timed_out=True)
                else:
                    ok, by = approve(record, machine.approval_evidence(record))
                    machine.answer_approval(release_id, approved=ok, by=by)
            else:
                getattr(machine, action)(release_id)
        except BaseException as exc:
            record = machine.records.get(release_id)
            if record.state not in FINAL:
                machine.rollback(release_id, f"{action} failed: {type(exc).__name__}: {exc}")
            raise
