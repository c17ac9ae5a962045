"""The local release rehearsal: the product's main job, end to end, on the embedded stack.

build -> publish (S3) -> sync (verified, atomic) -> load -> canary steps judged under live load
-> promote -> retire the oldest version; then a second release whose candidate starts failing
mid-canary and is rolled back by the judge. Both releases go through the same state machine
and records as the release DAG (llm_release.release); the timeline of each (steps, weights,
verdicts with their numbers, the rollback and how long it took) is printed, and written as JSON
beside the stack's state, with where the records are.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llm_release.stack.local import LocalStack, local_environment

MODEL = "reference_lm"
FAULT_ONSET_S = 20.0  # the bad engine answers well through load, probe and warm-up, then fails


@dataclass
class RehearsalConfig:
    state_dir: Path
    model: str = MODEL
    steps: list[int] = field(default_factory=lambda: [50, 100])
    min_soak_s: float = 45.0  # longer than the fault takes to start: the bad release cannot pass first
    max_soak_s: float = 180.0
    rate_per_s: float = 30.0
    keep_stack: bool = False
    retire_window_s: float = 10.0


def _engines(cfg: RehearsalConfig, work: Path) -> list[dict]:
    """v1 the stable engine, v2 a good new one, v3 one that fails a third of its requests
    FAULT_ONSET_S after it is loaded (the reference engine wrapped with an injected fault)."""
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint
    from llm_release.engine.faults import Faults, install_faulty_version

    params = {"max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}
    out = []
    # Same precision: a new release is new weights, not a slower arithmetic (numpy's fp16 is).
    for version, seed, precision in ((1, 1, "fp32"), (2, 2, "fp32"), (3, 3, "fp32")):
        ckpt = make_reference_checkpoint(work / f"checkpoint-seed{seed}", seed=seed)
        meta = build_engine(ckpt, work / f"engine-v{version}", dict(params, precision=precision),
                            model_name=cfg.model, version=version)
        engine_dir = work / f"engine-v{version}"
        if version == 3:
            scratch = work / "fault-variant"
            shutil.rmtree(scratch, ignore_errors=True)
            engine_dir = install_faulty_version(engine_dir, scratch, Faults(error_rate=0.3, onset_s=FAULT_ONSET_S,
                                                                            seed=7), model_name=cfg.model, version=3)
        out.append({"version": version, "dir": engine_dir, "precision": meta.precision})
    return out


def run_rehearsal(cfg: RehearsalConfig, log: Callable[[str], None] = print) -> dict:
    from llm_release.artifacts.manifest import Manifest
    from llm_release.artifacts.publish import publish_engine
    from llm_release.artifacts.stores.s3 import S3Store
    from llm_release.artifacts.sync import SyncOptions, run_sync
    from llm_release.loadgen import SteadyLoad
    from llm_release.records import ReleaseRecords
    from llm_release.release.machine import ReleaseMachine, drive
    from llm_release.release.retirement import RetentionPolicy, plan_retirement, retire_version
    from llm_release.release.spec import ReleaseSpec
    from llm_release.routing.state import RoutingState
    from llm_release.stack.airflow_connections import ARTIFACT_BUCKET, ARTIFACT_PREFIX

    stack = LocalStack(cfg.state_dir)
    work = Path(cfg.state_dir)
    summary: dict = {"model": cfg.model, "steps": [], "releases": []}

    def step(name: str, fn):
        log(f"==> {name}")
        started = time.perf_counter()
        value = fn()
        took = round(time.perf_counter() - started, 3)
        summary["steps"].append({"step": name, "seconds": took})
        log(f"    done in {took:.2f} s")
        return value

    if not stack.is_running():
        # A rehearsal starts from nothing: earlier engines, versions and records are not evidence.
        for leftover in [stack.model_repository, work / "records", work / "fault-variant",
                         *work.glob("checkpoint-seed*"), *work.glob("engine-v*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    state = step("start the local stack", stack.up)
    try:
        comps = state["components"]
        env = local_environment(state, "staging")
        engines = step(f"build engines v1 (stable), v2 (good), v3 (fails from {FAULT_ONSET_S:.0f} s after loading)",
                       lambda: _engines(cfg, work))
        import boto3

        from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

        client = boto3.client("s3", endpoint_url=comps["s3"]["url"], region_name=S3_REGION,
                              aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
        store = S3Store(client, ARTIFACT_BUCKET, ARTIFACT_PREFIX)
        published = step(f"publish v1, v2, v3 to {store.describe()} (immutable)",
                         lambda: [publish_engine(e["dir"], store) for e in engines])
        for result in published:
            log(f"    {result.model} v{result.version} {result.manifest_digest}")
        report = step("sync the model repository from the store (verified, atomic)",
                      lambda: run_sync(store, state["model_repository"], SyncOptions(models=(cfg.model,))))
        log("    " + report.summary())
        served, router = env.served_versions(), env.router_instance()
        step("v1 takes all traffic (the version in production before the rehearsal)",
             lambda: (served.load(cfg.model, 1), router.apply(RoutingState(cfg.model, {1: 100}))))

        def published_digest(model: str, version: int):
            data = store.fetch_manifest(model, version)
            return Manifest.from_bytes(data).digest if data else None

        records_url = ReleaseRecords.sqlite_url(work / "records" / "releases.db")
        records = ReleaseRecords(records_url)
        machine = ReleaseMachine(records, env, holder="rehearsal", served=served, router=router)
        url = f"{comps['envoy']['url']}/v2/models/{cfg.model}/generate"

        def release(version: int) -> dict:
            spec = ReleaseSpec.from_dict({"model": cfg.model, "version": version, "environment": "staging",
                                          "steps": cfg.steps, "min_soak_s": cfg.min_soak_s,
                                          "max_soak_s": cfg.max_soak_s})
            record = machine.begin(spec, requested_by="rehearsal", published_digest=published_digest)
            with SteadyLoad(url, rate_per_s=cfg.rate_per_s) as load:
                try:
                    final = drive(machine, record.id)
                except Exception as exc:  # noqa: BLE001 - the record says what happened
                    log(f"    the release stopped: {type(exc).__name__}: {exc}")
                    final = records.get(record.id)
            doc = timeline(final)
            doc["clients"] = client_view(load.snapshot())
            summary["releases"].append(doc)
            for line in format_timeline(doc):
                log("    " + line)
            return doc

        first = step(f"release v2: canary {cfg.steps} judged under {cfg.rate_per_s:.0f} req/s", lambda: release(2))

        def retire_oldest():
            time.sleep(cfg.retire_window_s + 2)  # v1's last requests must age out of the window
            plan = plan_retirement(cfg.model, installed=sorted(served.ready_versions(cfg.model)),
                                   routing=router.get_state(cfg.model), ready_elsewhere={},
                                   policy=RetentionPolicy(keep_newest=1, zero_traffic_window_s=cfg.retire_window_s))
            done = [retire_version(cfg.model, v, router=router, served=served,
                                   model_repository=Path(state["model_repository"]), prometheus=env.metrics(),
                                   window_s=cfg.retire_window_s) for v in plan.retire]
            return {"kept": {str(k): v for k, v in plan.keep.items()},
                    "retired": [{"version": r.version, "steps": r.steps, "requests_in_window": r.requests_in_window}
                                for r in done]}

        if first["outcome"] == "promoted":
            summary["retirement"] = step("retire the oldest version (no traffic in the window)", retire_oldest)
            log("    kept " + json.dumps(summary["retirement"]["kept"]) + "; retired "
                + ", ".join(f"v{r['version']}" for r in summary["retirement"]["retired"]))
        second = step(f"release v3: canary {cfg.steps}; it starts failing mid-step", lambda: release(3))
        ready = next((e["t_s"] for e in second["events"] if "READY" in e["what"]), 0.0)
        # The fault clock starts while Triton loads the version: between the release's start and READY.
        second["fault_began_s"] = [FAULT_ONSET_S, round(ready + FAULT_ONSET_S, 1)]
        log(f"    the fault began between +{FAULT_ONSET_S:.1f} s and +{ready + FAULT_ONSET_S:.1f} s")
        summary["records"] = {"url": records_url, "history": f"llm-release history --model {cfg.model} "
                                                             f"--state-dir {cfg.state_dir}"}
        summary["ok"] = [r["outcome"] for r in summary["releases"]] == ["promoted", "rolled_back"]
        records.close()
    finally:
        if not cfg.keep_stack:
            step("stop the local stack", stack.down)
    out = Path(cfg.state_dir) / "rehearsal-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_file"] = str(out)
    return summary


def client_view(responses) -> dict:
    """What the clients saw during a release: requests, answers by status and by version."""
    from collections import Counter

    return {"requests": len(responses), "by_status": dict(Counter(str(r.status) for r in responses)),
            "by_version": dict(Counter(str(r.version) for r in responses if r.version))}


def timeline(record) -> dict:
    """A release as a person reads it: what moved when, what the judge said, how it ended."""
    started = record.created_at.timestamp()
    events = []
    fail_at = None
    for event in record.events:
        at = round(event.at.timestamp() - started, 1)
        item = {"t_s": at, "kind": event.kind, "what": event.message}
        if event.kind == "verdict":
            verdict = (event.data or {}).get("verdict") or {}
            decided = [c for c in verdict.get("checks", []) if c.get("outcome") in ("FAIL", "PASS")]
            decided.sort(key=lambda c: c["outcome"] != "FAIL")  # what failed first
            item["checks"] = [{"check": c["name"], "outcome": c["outcome"], "why": c.get("reason")}
                              for c in decided[:6]]
            if event.data.get("decision") != "PASS":
                fail_at = event.at.timestamp()  # when the judge's FAIL reached the release
        events.append(item)
    rollback_s = None
    if record.outcome == "rolled_back" and record.finished_at and fail_at:
        rollback_s = round(record.finished_at.timestamp() - fail_at, 3)
    return {"release": record.id, "version": record.version, "outcome": record.outcome, "reason": record.reason,
            "seconds": round((record.finished_at or record.updated_at).timestamp() - started, 1),
            "rollback_after_verdict_s": rollback_s, "events": events}


def format_timeline(doc: dict) -> list[str]:
    lines = [f"release {doc['release']} of v{doc['version']}: {doc['outcome']} after {doc['seconds']:.0f} s"
             + (f"; clients sent {doc['clients']['requests']} requests, answers {doc['clients']['by_status']} "
                f"by version {doc['clients']['by_version']}" if doc.get("clients") else "")]
    for e in doc["events"]:
        lines.append(f"  +{e['t_s']:6.1f} s  {e['kind']:<10} {e['what']}")
        for c in e.get("checks", []):
            lines.append(f"             {c['outcome']:<5} {c['check']}: {c['why']}")
    if doc.get("fault_began_s"):
        lines.append(f"  the injected fault began between +{doc['fault_began_s'][0]:.1f} s and "
                     f"+{doc['fault_began_s'][1]:.1f} s")
    if doc.get("rollback_after_verdict_s") is not None:
        lines.append(f"  traffic back on the stable version {doc['rollback_after_verdict_s']:.2f} s after the FAIL verdict "
                     "(restored and read back from the gateway)")
    return lines


def format_summary(summary: dict) -> str:
    lines = [f"Release rehearsal for {summary['model']}", ""]
    for s in summary["steps"]:
        lines.append(f"  {s['seconds']:8.2f} s  {s['step']}")
    for doc in summary.get("releases", []):
        lines += [""] + format_timeline(doc)
    if summary.get("retirement"):
        retired = summary["retirement"]["retired"]
        lines += ["", "Retired: " + (", ".join(f"v{r['version']} ({'; '.join(r['steps'])})" for r in retired) or "none")]
    if summary.get("records"):
        lines += ["", f"Release records: {summary['records']['url']}", f"  read them with: {summary['records']['history']}"]
    if summary.get("summary_file"):
        lines += [f"Summary written to {summary['summary_file']}"]
    return "\n".join(lines)
