"""`llm-release`: the command line of the release system (also usable without Airflow).

Errors from the core are printed as one clear line and exit 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from llm_release.errors import LLMReleaseError, SpecError, StackAlreadyRunning


def _stack(args):
    from llm_release.stack.local import LocalStack

    return LocalStack(args.state_dir)


def cmd_stack_up(args) -> int:
    stack = _stack(args)
    try:
        state = stack.up(timeout_s=args.timeout)
    except StackAlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        if args.json:
            print(json.dumps(stack.status(), indent=2))
        return 1
    if args.json:
        print(json.dumps(stack.status(), indent=2))
    else:
        print(f"stack up in {state['cold_start_s']:.2f} s (state in {stack.state_dir})")
        for name, comp in state["components"].items():
            print(f"  {name:<11} {comp['url']}")
        print(f"  model repository  {state['model_repository']}")
        print("  next: `llm-release airflow up` for Airflow on this stack; "
              "`eval \"$(llm-release stack env)\"` for the CLI's S3 access")
    return 0


def cmd_stack_down(args) -> int:
    stopped = _stack(args).down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _print_health(components: dict, detail) -> None:
    """One line per component: name, health, then `detail(component)`."""
    width = max(map(len, components)) + 1
    for name, comp in components.items():
        health = "healthy" if comp["healthy"] else ("running, unhealthy" if comp["running"] else "down")
        print(f"  {name:<{width}} {health:<19} {detail(comp)}")


def cmd_stack_status(args) -> int:
    status = _stack(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    elif not status["components"]:
        print(f"no stack in {status['state_dir']}")
    else:
        _print_health(status["components"], lambda comp: f"{comp['url']}  ({comp['detail']})")
    if not status["components"]:
        return 3
    return 0 if status.get("healthy") else 1


def cmd_stack_env(args) -> int:
    import shlex

    from llm_release.stack.local import s3_client_env

    state = _stack(args).read_state()
    if not state:
        print("no stack running; start one with `llm-release stack up`", file=sys.stderr)
        return 3
    print(Path(state["connections"]["env"]).read_text(), end="")
    # The CLI (publish, sync) reaches the stack's S3 with the standard AWS variables.
    for key, value in {**s3_client_env(state), "LLM_RELEASE_STATE_DIR": state["state_dir"]}.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _airflow(args):
    from llm_release.stack.airflow import LocalAirflow

    return LocalAirflow(args.state_dir)


def cmd_airflow_up(args) -> int:
    airflow = _airflow(args)
    try:
        state = airflow.up(port=args.port, host=args.host, dags_folder=args.dags_folder, timeout_s=args.timeout)
    except StackAlreadyRunning as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(state | {"login": dict(zip(("user", "password"), airflow.login()))}, indent=2))
        return 0
    user, password = airflow.login()
    print(f"Airflow {state.get('version') or ''} up in {state['start_s']:.0f} s (state in {airflow.root})")
    print(f"  UI and REST API  {state['url']}")
    print(f"  login            {user} / {password}   (kept in {airflow.passwords_file})")
    for dag in state["dags"]:
        if "import_error" in dag:
            print(f"  DAG import error {dag['import_error']}: {' '.join(dag['detail'])}")
            continue
        schedule = dag.get("schedule") or "None"
        note = "paused: unpause it in the UI to start its schedule" if dag["is_paused"] else "active"
        print(f"  DAG              {dag['dag_id']:<20} schedule {schedule:<8} {note}")
    print(f"  connections      {', '.join(state['connections'])} (Admin > Connections)")
    print(f"  variables        {', '.join(state['variables'])} (Admin > Variables)")
    print(f"  airflow CLI      export AIRFLOW_HOME={airflow.home}")
    print(f"  logs             {airflow.logs}/ (components), {airflow.home / 'logs'}/ (tasks)")
    return 0


def cmd_airflow_down(args) -> int:
    stopped = _airflow(args).down()
    print("stopped: " + (", ".join(f"airflow {c}" for c in stopped) if stopped else "no Airflow was running"))
    return 0


def cmd_airflow_status(args) -> int:
    status = _airflow(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    elif not status["components"]:
        print(f"no Airflow in {status['root']}; start one with `llm-release airflow up`")
    else:
        print(f"Airflow at {status['url']} (AIRFLOW_HOME={status['home']})")
        _print_health(status["components"], lambda comp: f"({comp['detail']}; log {comp['log']})")
    if not status["components"]:
        return 3
    return 0 if status.get("healthy") else 1


def cmd_airflow_env(args) -> int:
    airflow = _airflow(args)
    if not airflow.read_state():
        print("no Airflow running; start one with `llm-release airflow up`", file=sys.stderr)
        return 3
    import shlex

    for key, value in airflow.env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_checkpoint(args) -> int:
    from llm_release.engine.checkpoint import checkpoint_digest, make_reference_checkpoint

    path = make_reference_checkpoint(Path(args.out), seed=args.seed)
    print(f"{path}  {checkpoint_digest(path)}")
    return 0


def cmd_engine_build(args) -> int:
    from llm_release.engine.builder import build_engine

    params = {"precision": args.precision, "max_batch_size": args.max_batch_size,
              "max_input_len": args.max_input_len, "max_seq_len": args.max_seq_len}
    meta = build_engine(Path(args.checkpoint), Path(args.out), params, model_name=args.model, version=args.version)
    print(f"built {meta.model} v{meta.version} ({meta.precision}) in {args.out}")
    return 0


def cmd_engine_build_trtllm(args) -> int:
    """Inside a build pod: run the TensorRT-LLM build the request describes (docs/builds.md)."""
    from llm_release.build.pod_runner import run_build
    from llm_release.build.trtllm import TrtllmBuildRequest

    try:
        data = json.loads(args.request)
    except ValueError as exc:
        raise SpecError("request", f"is not valid JSON ({exc})", "pass the request as one JSON object") from exc
    run_build(TrtllmBuildRequest.from_dict(data))
    return 0


def cmd_engine_install(args) -> int:
    from llm_release.model_repo import install_version

    path = install_version(Path(args.engine), Path(args.repo), model_name=args.model, version=args.version)
    print(f"installed {path}")
    return 0


def _store(args):
    from llm_release.artifacts.sources import store_from_options

    return store_from_options(args.store, bucket=args.bucket, prefix=args.prefix, url=args.url, repo=args.repo,
                              registry=args.registry, insecure=args.insecure, endpoint_url=args.endpoint_url)


def cmd_publish(args) -> int:
    from llm_release.artifacts.publish import publish_engine

    result = publish_engine(Path(args.engine), _store(args))
    print(json.dumps(result.to_dict(), indent=2) if args.json else
          f"{'published' if result.uploaded else 'already published'}: {result.model} v{result.version} "
          f"{result.manifest_digest} on {result.store}")
    return 0


def cmd_sync(args) -> int:
    from llm_release.artifacts.sync import SyncOptions, run_sync
    from llm_release.triton_control import TritonControl

    options = SyncOptions(models=tuple(args.model) or None, version=args.version, keep_latest=args.keep_latest,
                          dry_run=args.dry_run)
    triton = TritonControl(args.triton_url, model_repository=args.repo_dir) if args.triton_url else None
    runtime = None
    declared = {k: v for k, v in (("image", args.runtime_image), ("trtllm_version", args.runtime_trtllm_version),
                                  ("gpu_arch", args.runtime_gpu_arch), ("metrics_url", args.metrics_url)) if v}
    if declared:
        from llm_release.environments import TritonRuntime
        from llm_release.provenance import runtime_reader

        if not args.triton_url:
            raise SpecError("--triton-url", "is needed to check provenance", "give the Triton the repository serves")
        runtime_doc = TritonRuntime.from_dict(declared, "runtime")
        runtime = runtime_reader(args.triton_url, metrics_url=runtime_doc.metrics_url, declared=runtime_doc)
    report = run_sync(_store(args), Path(args.repo_dir), options, triton=triton, runtime=runtime)
    doc = report.to_dict()
    if args.report:
        Path(args.report).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2) if args.json else report.summary())
    return 1 if report.failed else 0


def _store_options(p) -> None:
    p.add_argument("--store", choices=("s3", "artifactory", "oci"), default="s3")
    p.add_argument("--bucket", help="S3 bucket")
    p.add_argument("--prefix", default="", help="path prefix (S3, Artifactory) or namespace (OCI)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--url", help="Artifactory URL, e.g. https://artifactory.example.com/artifactory")
    p.add_argument("--repo", help="Artifactory generic repository key")
    p.add_argument("--registry", help="OCI registry host:port")
    p.add_argument("--insecure", action="store_true", help="OCI registry over plain HTTP")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _gateway(args):
    """The router and Triton for traffic commands: an environment's, a local stack's, or given explicitly."""
    from llm_release.environments import RouterSpec, build_router
    from llm_release.stack.local import LocalStack, gateway_router
    from llm_release.triton_control import TritonControl

    if getattr(args, "env", None):
        env = _environment(args)
        return env.router_instance(), env.served_versions()
    if args.envoy_admin:
        if not (args.control_plane and args.upstream):
            raise SpecError("--control-plane/--upstream", "are required with --envoy-admin",
                            "give the gateway control plane's URL and Triton host:port")
        spec = RouterSpec.from_dict({"kind": "envoy", "admin_url": args.envoy_admin, "control_plane_url": args.control_plane,
                                     "upstream": args.upstream, "shadow_listener": args.shadow}, "--envoy-admin")
        return build_router(spec), TritonControl(args.triton_url) if args.triton_url else None
    state = LocalStack(args.state_dir).read_state()
    if not state:
        raise SpecError("--state-dir", "no running stack there", "start one, or give --env, or --envoy-admin/--control-plane/--upstream")
    return gateway_router(state), TritonControl(state["components"]["triton"]["url"])


def _pairs(text: str | None, field: str) -> dict[str, int]:
    """"1=90,2=10" -> {"1": 90, "2": 10}."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise SpecError(field, f"{item!r} is not KEY=INTEGER", "write e.g. 1=90,2=10")
        out[key.strip()] = int(value)
    return out


def cmd_traffic(args) -> int:
    from llm_release.routing.shift import load_previous, save_state, shift_traffic
    from llm_release.routing.state import RoutingState, parse_weights

    router, triton = _gateway(args)
    if args.action == "status":
        current = router.get_state(args.model)
        print(json.dumps(current.to_dict() if current else None, indent=2))
        return 0
    if args.action == "rollback":
        if args.to_version:
            if not args.model:
                raise SpecError("--model", "is required with --to-version", "name the model to roll back")
            target = RoutingState(args.model, {args.to_version: 100})
        elif args.record:
            target = load_previous(Path(args.record))
        else:
            raise SpecError("--record/--to-version", "nothing to roll back to", "give the record of a shift, or a version")
        # An emergency rollback goes to a version that served before: no probe delays it.
        result = shift_traffic(router, target, triton=None)
    else:
        if args.action == "switch":
            target = RoutingState(args.model, {args.version: 100})
        else:
            mirror = _pairs(args.mirror, "--mirror")
            (mirror_version, mirror_percent), = mirror.items() if mirror else ((None, 0),)
            target = RoutingState(args.model, parse_weights(_pairs(args.weights, "--weights")), header=args.header,
                                  header_routes=_pairs(args.route, "--route"),
                                  mirror_version=int(mirror_version) if mirror_version else None,
                                  mirror_percent=mirror_percent)
        result = shift_traffic(router, target, triton=None if args.no_ready_check else triton)
    if args.record and args.action != "rollback":
        save_state(Path(args.record), result)
    print(json.dumps(result.to_dict(), indent=2))
    return 0


def _when(text: str | None, now: float, field: str) -> float:
    """"10m", "90s", "2h" ago, seconds since the epoch, or an ISO 8601 time -> epoch seconds."""
    from datetime import datetime

    if text is None:
        return now
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SpecError(field, f"{text!r} is not a time", 'give e.g. 10m (ago), an epoch time, or 2026-11-29T10:00:00Z')


def _analysis_target(args):
    from llm_release.analysis.canary import CanaryTarget
    from llm_release.stack.local import LocalStack

    disabled = {}
    if args.prometheus:
        prometheus, gateway, triton = args.prometheus, args.gateway_url, args.triton_url
    else:
        state = LocalStack(args.state_dir).read_state()
        if not state:
            raise SpecError("--state-dir", "no running stack there", "start one, or give --prometheus (and --gateway-url, --triton-url)")
        comps = state["components"]
        prometheus, gateway, triton = comps["prometheus"]["url"], comps["envoy"]["url"], comps["triton"]["url"]
        disabled["gpu_headroom"] = "local stack: Triton on CPU (--allow-gpu-metrics=false), no GPU memory to read"
    target = CanaryTarget(args.model, args.candidate, args.baseline, prometheus, gateway_url=gateway,
                          triton_url=triton, shadow=args.shadow)
    return target, disabled


def cmd_analyze(args) -> int:
    import time

    from llm_release.analysis.canary import StepWatch, build_analysis, write_verdict
    from llm_release.analysis.verdict import Outcome

    target, disabled = _analysis_target(args)
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    for item in args.disable or []:
        name, sep, reason = item.partition("=")
        if not sep or not reason.strip():
            raise SpecError("--disable", f"{item!r} has no reason", 'write NAME="why it cannot be measured"')
        disabled[name.strip()] = reason.strip()
    config["disabled"] = {**disabled, **(config.get("disabled") or {})}
    now = time.time()
    # A live watch starts now unless told otherwise; a replay looks at the last 10 minutes.
    since = _when(args.since, now, "--since") if args.since else (now if args.watch else now - 600)
    if args.watch:
        watch = StepWatch(args.min_soak, args.max_soak)
        analysis = build_analysis(target, config, since=since, step_s=args.step)
        while True:
            verdict = analysis.poll()
            decision = watch.decide(verdict, time.time() - since)
            if verdict is not None and not args.json:
                print(f"{time.strftime('%H:%M:%S')} {verdict.outcome.value}: {verdict.reason}", flush=True)
            if decision:
                break
            time.sleep(args.poll)
    else:
        until = _when(args.until, now, "--until")
        analysis = build_analysis(target, config, since=since, step_s=args.step, lag_s=0.0, probe=False,
                                  clock=lambda: until)
        verdict = analysis.poll()
    if verdict is None:
        raise SpecError("--since", "the window holds no whole interval", "give a longer window or a shorter --step")
    if args.out:
        write_verdict(Path(args.out), f"{target.model}-v{target.candidate}-vs-v{target.baseline}", verdict,
                      context={"model": target.model, "candidate": target.candidate, "baseline": target.baseline})
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else verdict.table())
    return {Outcome.PASS: 0, Outcome.FAIL: 1}.get(verdict.outcome, 3)


def cmd_rehearse(args) -> int:
    from llm_release.rehearsal import RehearsalConfig, format_summary, run_rehearsal
    from llm_release.stack.local import default_state_dir

    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir().parent / "rehearsal"
    cfg = RehearsalConfig(state_dir=state_dir, keep_stack=args.keep_stack, rate_per_s=args.rate)
    if args.steps:
        cfg.steps = [int(x) for x in args.steps.split(",")]
    summary = run_rehearsal(cfg)
    print()
    print(format_summary(summary))
    return 0 if summary.get("ok") else 1


def _duration(seconds: float) -> str:
    """90.5 -> "1m30s"; 7300 -> "2h01m"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _format_release(record, now) -> list[str]:
    """One release as a block: what, where, how it ended, who, when, then its timeline."""
    started = record.created_at
    baseline = f" (baseline v{record.baseline_version})" if record.baseline_version is not None else ""
    ending = record.outcome or f"{record.state} (running)"
    took = (f"took {_duration(record.duration_s)}" if record.finished
            else f"running for {_duration((now - started).total_seconds())}")
    run = f"  ({record.dag_id}/{record.run_id})" if record.dag_id else ""
    lines = [f"#{record.id}  {record.model} v{record.version}{baseline}  {record.environment}/{record.region}  "
             f"{record.strategy}  {ending}",
             f"    by {record.requested_by or 'unknown'}  at {started:%Y-%m-%d %H:%M:%S}Z  {took}{run}"]
    if record.artifact_digest:
        lines.append(f"    artifact {record.artifact_digest}")
    if record.reason:
        lines.append(f"    reason: {record.reason}")
    for event in record.events:
        when = f"{event.at:%H:%M:%S}" if event.at.date() == started.date() else f"{event.at:%Y-%m-%d %H:%M:%S}"
        moved = f"{event.from_state} -> {event.to_state}" if event.from_state else (
            f"-> {event.to_state}" if event.to_state else "")
        actor = f"  [{event.actor}]" if event.actor else ""
        lines.append(f"      {when}  {event.kind:<10} {moved:<24} {event.message}{actor}")
    return lines


def cmd_history(args) -> int:
    from datetime import datetime, timezone

    from llm_release.records import ReleaseRecords, resolve_url

    url = resolve_url(args.records, args.state_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        # Nothing was ever released from here: say so instead of creating an empty database.
        print("[]" if args.json else f"no releases of {args.model}: no release records at {url[len('sqlite:///'):]} yet")
        return 0
    with ReleaseRecords(url) as records:
        found = records.history(args.model, environment=args.env, limit=args.limit)
        where = records.masked_url
    if args.json:
        print(json.dumps([record.to_dict() for record in found], indent=2))
        return 0
    if not found:
        print(f"no releases of {args.model}{f' in {args.env}' if args.env else ''} in {where}")
        return 0
    now = datetime.now(timezone.utc)
    print("\n\n".join("\n".join(_format_release(record, now)) for record in found))
    return 0


def _environment(args):
    """The environment named by --env/--region, from --environments or the local stack's file."""
    from llm_release.environments import EnvironmentSet
    from llm_release.stack.local import ENVIRONMENTS_FILE, default_state_dir

    path = Path(args.environments) if args.environments else Path(args.state_dir or default_state_dir()) / ENVIRONMENTS_FILE
    return EnvironmentSet.from_file(path).get(args.env, args.region)


def _records_or_none(args):
    """(the records database, None), or (None, why not): a rollback never waits for it."""
    from llm_release.records import ReleaseRecords, resolve_url

    try:
        return ReleaseRecords(resolve_url(args.records, args.state_dir)), None
    except LLMReleaseError as exc:
        logging.getLogger("llm_release.cli").warning("release records unreachable (%s): rolling back without them", exc)
        return None, f"records unreachable: {exc}"


def cmd_rollback(args) -> int:
    from llm_release.release.emergency import emergency_rollback
    from llm_release.release.machine import default_holder

    from dataclasses import replace

    env = _environment(args)
    records, problem = (None, "not used (--no-records)") if args.no_records else _records_or_none(args)
    try:
        result = emergency_rollback(env, args.model, to_version=args.to, records=records, actor=default_holder(),
                                    reason=args.reason)
    finally:
        if records is not None:
            records.close()
    if problem and not result.records_problem:
        result = replace(result, records_problem=problem)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{args.model} in {result.environment}: {result.previous.describe() if result.previous else 'no route'}"
              f" -> {result.applied.describe()} in {result.seconds:.2f} s")
        if result.release_id:
            print(f"release {result.release_id} closed as rolled back")
        print("recorded in the release records" if result.recorded else
              f"NOT recorded: {result.records_problem}")
    return 0


def cmd_release(args) -> int:
    """Drive a whole release from this process (the DAG runs the same transitions task by task)."""
    from llm_release.records import ReleaseRecords, resolve_url
    from llm_release.release.machine import ReleaseMachine, default_holder, drive
    from llm_release.release.spec import ReleaseSpec

    doc = json.loads(Path(args.spec).read_text()) if args.spec else {}
    for key in ("model", "version", "strategy"):
        if getattr(args, key) is not None:
            doc[key] = getattr(args, key)
    doc["environment"] = args.env
    if args.region:
        doc["region"] = args.region
    if args.steps:
        doc["steps"] = [int(x) for x in args.steps.split(",")]
    spec = ReleaseSpec.from_dict(doc)
    env = _environment(args)
    with ReleaseRecords(resolve_url(args.records, args.state_dir)) as records:
        machine = ReleaseMachine(records, env, holder=default_holder())
        record = machine.begin(spec, requested_by=default_holder())

        def approve(record, evidence):
            print(evidence)
            answer = input("Approve the final step? [y/N] ").strip().lower() if args.approve is None else args.approve
            return answer in ("y", "yes", "approve"), default_holder()

        try:
            final = drive(machine, record.id, approve=approve)
        except LLMReleaseError:
            final = records.get(record.id)
        print(json.dumps(final.to_dict(), indent=2) if args.json else f"release {final.id}: {final.outcome}: {final.reason}")
        return 0 if final.outcome in ("promoted", "passed") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-release", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the local release stack (Triton, Envoy, Prometheus, S3)")
    stack_sub = stack.add_subparsers(dest="action", required=True)
    for name, fn, help_text in (("up", cmd_stack_up, "start every component"),
                                ("down", cmd_stack_down, "stop every component, leave no process"),
                                ("status", cmd_stack_status, "URL and health of each component"),
                                ("env", cmd_stack_env, "print AIRFLOW_CONN_* and AWS_* exports for the running stack")):
        p = stack_sub.add_parser(name, help=help_text)
        p.add_argument("--state-dir", help="stack state directory (default $LLM_RELEASE_STATE_DIR or ~/.local/state/llm-release/stack)")
        if name in ("up", "status"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "up":
            p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for health")
        p.set_defaults(func=fn)

    af = sub.add_parser("airflow", help="a local Airflow (API server, scheduler, DAG processor, triggerer) on the stack")
    af_sub = af.add_subparsers(dest="action", required=True)
    for name, fn, help_text in (("up", cmd_airflow_up, "start Airflow against the running stack, wait until usable"),
                                ("down", cmd_airflow_down, "stop every Airflow process"),
                                ("status", cmd_airflow_status, "health of each Airflow component"),
                                ("env", cmd_airflow_env, "print AIRFLOW_HOME for airflow CLI commands")):
        p = af_sub.add_parser(name, help=help_text)
        p.add_argument("--state-dir", help="the stack's state directory (default $LLM_RELEASE_STATE_DIR or "
                                           "~/.local/state/llm-release/stack)")
        if name in ("up", "status"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "up":
            p.add_argument("--port", type=int, help="UI/API port (default 8080, or a free one when 8080 is taken)")
            p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
            p.add_argument("--dags-folder", type=Path, help="DAG folder (default: this checkout's dags/)")
            p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait until usable")
        p.set_defaults(func=fn)

    ck = sub.add_parser("checkpoint", help="write a reference checkpoint (deterministic)")
    ck.add_argument("--out", required=True)
    ck.add_argument("--seed", type=int, default=0)
    ck.set_defaults(func=cmd_checkpoint)

    engine = sub.add_parser("engine", help="build and install engines")
    engine_sub = engine.add_subparsers(dest="action", required=True)
    b = engine_sub.add_parser("build", help="build the reference engine from a checkpoint")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--version", type=int, required=True)
    b.add_argument("--precision", default="fp16")
    b.add_argument("--max-batch-size", type=int, default=8)
    b.add_argument("--max-input-len", type=int, default=256)
    b.add_argument("--max-seq-len", type=int, default=512)
    b.set_defaults(func=cmd_engine_build)
    bt = engine_sub.add_parser("build-trtllm", help="inside a GPU build pod: convert, trtllm-build, metadata.json "
                               "(prints LLM_RELEASE_RESULT {json} last)")
    bt.add_argument("--request", required=True, help="the build request as one JSON object (TrtllmBuildRequest)")
    bt.set_defaults(func=cmd_engine_build_trtllm)
    i = engine_sub.add_parser("install", help="install a built engine as a Triton model version (atomic)")
    i.add_argument("--engine", required=True)
    i.add_argument("--repo", required=True)
    i.add_argument("--model")
    i.add_argument("--version", type=int)
    i.set_defaults(func=cmd_engine_install)

    pub = sub.add_parser("publish", help="publish a built engine once, immutably (credentials from the environment)")
    pub.add_argument("--engine", required=True, help="engine directory with metadata.json")
    _store_options(pub)
    pub.set_defaults(func=cmd_publish)

    syn = sub.add_parser("sync", help="bring a model repository up to date from a store")
    syn.add_argument("--repo-dir", required=True, help="the model repository (Triton's PVC)")
    syn.add_argument("--triton-url", help="load new versions in this Triton (HTTP URL)")
    syn.add_argument("--model", action="append", default=[], help="only this model (repeatable)")
    syn.add_argument("--version", type=int, help="only this version")
    syn.add_argument("--keep-latest", type=int, default=3, help="retention: newest published versions per model")
    syn.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    syn.add_argument("--report", help="also write the report as JSON to this file")
    syn.add_argument("--runtime-image", help="provenance gate: the tritonserver image the repository's Triton runs")
    syn.add_argument("--runtime-trtllm-version", help="provenance gate: its TensorRT-LLM version")
    syn.add_argument("--runtime-gpu-arch", help="provenance gate: its GPU architecture, e.g. sm90")
    syn.add_argument("--metrics-url", help="provenance gate: Triton's metrics URL (no GPU there reads as cpu)")
    _store_options(syn)
    syn.set_defaults(func=cmd_sync)

    traffic = sub.add_parser("traffic", help="route a model's traffic on the gateway (works without Airflow)")
    traffic_sub = traffic.add_subparsers(dest="action", required=True)
    for name, help_text in (("status", "what the gateway serves now"),
                            ("set", "weights, A/B header routes, shadow mirror"),
                            ("switch", "blue-green: all traffic to one version"),
                            ("rollback", "restore the routing before a recorded shift, or all to one version")):
        t = traffic_sub.add_parser(name, help=help_text)
        t.add_argument("--model", required=name != "rollback")
        t.add_argument("--state-dir", help="a local stack's state directory (default: the default stack)")
        t.add_argument("--envoy-admin", help="Envoy admin URL (self-managed gateway)")
        t.add_argument("--control-plane", help="the gateway control plane's URL (xds_server), e.g. http://127.0.0.1:18090")
        t.add_argument("--upstream", help="Triton host:port behind the gateway")
        t.add_argument("--shadow", help="the gateway's shadow listener host:port")
        t.add_argument("--triton-url", help="Triton HTTP URL for readiness checks")
        t.add_argument("--env", help="an environment (its router, any kind, and its Triton topology)")
        t.add_argument("--region", help="the environment's region, when it has several")
        t.add_argument("--environments", help="environments file (default: the local stack's environments.json)")
        t.add_argument("--record", help="file keeping the routing before/after a shift (rollback reads it)")
        if name == "set":
            t.add_argument("--weights", required=True, help="e.g. 1=90,2=10")
            t.add_argument("--header", help="A/B header name, e.g. x-experiment")
            t.add_argument("--route", help="header value -> version, e.g. A=1,B=2")
            t.add_argument("--mirror", help="shadow: VERSION=PERCENT, e.g. 2=100")
        if name == "switch":
            t.add_argument("--version", type=int, required=True)
        if name in ("set", "switch"):
            t.add_argument("--no-ready-check", action="store_true", help="skip the READY check and probes")
        if name == "rollback":
            t.add_argument("--to-version", type=int, help="emergency: all traffic to this version")
        t.set_defaults(func=cmd_traffic)

    an = sub.add_parser("analyze", help="judge a canary against its baseline from the gateway's metrics (works without Airflow)",
                        description="PASS (exit 0), FAIL (exit 1) or INCONCLUSIVE (exit 3), with the numbers behind it.")
    an.add_argument("--model", required=True)
    an.add_argument("--candidate", type=int, required=True, help="the version under analysis")
    an.add_argument("--baseline", type=int, required=True, help="the stable version it is held against")
    an.add_argument("--since", help="start of the step: 10m (ago), epoch seconds or ISO time "
                                     "(default: 10 minutes ago; now with --watch)")
    an.add_argument("--until", help="end of the window (default: now); not with --watch")
    an.add_argument("--step", type=float, default=1.0, help="interval length in seconds (the scrape interval)")
    an.add_argument("--shadow", action="store_true", help="the candidate receives mirrored copies")
    an.add_argument("--config", help="JSON file of analysis settings (thresholds, alpha/beta, disabled checks)")
    an.add_argument("--disable", action="append", metavar="CHECK=REASON", help="switch a check off, saying why")
    an.add_argument("--watch", action="store_true", help="keep judging live (with probes) until the step is decided")
    an.add_argument("--min-soak", type=float, default=60.0, help="with --watch: seconds before a PASS ends it")
    an.add_argument("--max-soak", type=float, default=1800.0, help="with --watch: give up as INCONCLUSIVE after this")
    an.add_argument("--poll", type=float, default=1.0, help="with --watch: seconds between looks")
    an.add_argument("--out", help="also write the verdict as JSON and text files into this directory")
    an.add_argument("--json", action="store_true", help="machine-readable output")
    an.add_argument("--state-dir", help="a local stack's state directory (default: the default stack)")
    an.add_argument("--prometheus", help="Prometheus URL (instead of a local stack)")
    an.add_argument("--gateway-url", help="the gateway clients call (for the streaming probe)")
    an.add_argument("--triton-url", help="Triton HTTP URL (for the candidate's readiness)")
    an.set_defaults(func=cmd_analyze)

    h = sub.add_parser("history", help="a model's releases, newest first, each with its timeline (works without Airflow)")
    h.add_argument("--model", required=True)
    h.add_argument("--env", help="only releases to this environment")
    h.add_argument("--limit", type=int, default=20, help="at most this many releases (default 20)")
    h.add_argument("--json", action="store_true", help="machine-readable output")
    h.add_argument("--records", help="records database URL (default $LLM_RELEASE_RECORDS_URL, else "
                                     "<state dir>/records/releases.db)")
    h.add_argument("--state-dir", help="a local stack's state directory (default: the default stack)")
    h.set_defaults(func=cmd_history)

    def env_options(p) -> None:
        p.add_argument("--env", required=True, help="environment name (e.g. staging, production)")
        p.add_argument("--region", help="the environment's region, when it has several")
        p.add_argument("--environments", help="environments file (default: the local stack's environments.json)")
        p.add_argument("--records", help="records database URL (default $LLM_RELEASE_RECORDS_URL, else "
                                         "<state dir>/records/releases.db)")
        p.add_argument("--state-dir", help="a local stack's state directory (default: the default stack)")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    rb = sub.add_parser("rollback", help="emergency rollback of a model: all traffic back on a stable version "
                                         "(works without Airflow and without the records database)")
    rb.add_argument("--model", required=True)
    rb.add_argument("--to", type=int, help="the version to route all traffic to (default: what the records say was "
                                           "stable before the release in flight or the last promotion)")
    rb.add_argument("--reason", help="why, for the record")
    rb.add_argument("--no-records", action="store_true", help="do not touch the records database at all")
    env_options(rb)
    rb.set_defaults(func=cmd_rollback)

    rl = sub.add_parser("release", help="run a whole release from this shell (the release DAG does the same)")
    rl.add_argument("--model")
    rl.add_argument("--version", type=int)
    rl.add_argument("--strategy", choices=("canary", "blue_green", "shadow", "ab"))
    rl.add_argument("--steps", help="comma-separated percentages, e.g. 1,10,50,100")
    rl.add_argument("--spec", help="a JSON file with the release spec (the DAG's parameters)")
    rl.add_argument("--approve", choices=("yes", "no"), help="answer the approval without asking")
    env_options(rl)
    rl.set_defaults(func=cmd_release)

    r = sub.add_parser("rehearse", help="run the local release rehearsal end to end")
    r.add_argument("--state-dir")
    r.add_argument("--steps", help="canary steps of both releases, e.g. 50,100 (default)")
    r.add_argument("--rate", type=float, default=30.0, help="client requests per second during the releases")
    r.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    r.set_defaults(func=cmd_rehearse)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except LLMReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
