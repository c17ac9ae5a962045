"""Time from a canary's fault onset to 100% of traffic on the stable version, on the local stack.

The candidate is the fault-injecting reference engine: it answers well, then fails 30% of its
requests from a set moment on (on Triton 2.51 a failing model's answers reach clients as HTTP
400 through generate; see docs/analysis.md). Traffic is split 50/50 at --rate requests a second
through Envoy (>= 5 a second reach the candidate); Prometheus scrapes every second. The judge
runs three ways, and each run is measured the same way:

- `core`: CanaryAnalysis polled every second in this process, rollback applied on FAIL (no
  orchestrator: the floor the other two are compared with);
- `dag_test`: the canary_analysis DAG under `airflow dags test` (dag.test(): one process, the
  trigger inline);
- `scheduler`: the canary_analysis DAG triggered through the REST API of a real Airflow
  (`llm-release airflow up`: API server, scheduler, DAG processor, triggerer), the sensor
  deferred to the triggerer, which rolls back itself the moment the judge fails the canary.

Measured per run: onset (the first failed answer a client got), the judge's FAIL (the
verdict's decision time), and the routing change as an independent observer sees it (Envoy's
admin API read every 50 ms), plus the last answer clients got from the candidate. The bar
(design, section 7 and the canary-analysis issue): <= 10 s from onset to 100% on stable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.analysis.canary import CanaryTarget, StepWatch, build_analysis  # noqa: E402
from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.engine.faults import Faults, install_faulty_version  # noqa: E402
from llm_release.loadgen import SteadyLoad  # noqa: E402
from llm_release.model_repo import install_version  # noqa: E402
from llm_release.routing.state import RoutingState  # noqa: E402
from llm_release.stack.airflow_api import AirflowApi  # noqa: E402
from llm_release.stack.local import LocalStack, gateway_router  # noqa: E402
from llm_release.triton_control import TritonControl  # noqa: E402

MODEL = "rollback_lm"
PARAMS = {"precision": "fp32", "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}
SETTINGS = {"disabled": {"gpu_headroom": "local stack: Triton on CPU"}}


class RoutingWatch:
    """Reads the gateway's routing every 50 ms; notes when it first serves {baseline: 100}."""

    def __init__(self, router, model: str, baseline: int):
        self.router, self.model, self.baseline = router, model, baseline
        self.flipped_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and self.flipped_at is None:
            state = self.router.get_state(self.model)
            if state is not None and state.weights == {self.baseline: 100}:
                self.flipped_at = time.time()
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def prepare(state_dir: Path):
    stack = LocalStack(state_dir / "stack")
    state = stack.up()
    work = state_dir / "engines"
    ckpt = make_reference_checkpoint(work / "ckpt", seed=1)
    build_engine(ckpt, work / "engine", PARAMS, model_name=MODEL, version=1)
    return stack, state, work / "engine"


def reload_candidate(state, engine: Path, onset_s: float, run: int) -> tuple[TritonControl, int]:
    """A fresh faulty candidate (a new version number each run) beside the stable v1."""
    triton = TritonControl(state["components"]["triton"]["url"], model_repository=state["model_repository"])
    version = 100 + run
    install_version(engine, state["model_repository"], model_name=MODEL, version=1)
    install_faulty_version(engine, state["model_repository"], Faults(error_rate=0.3, onset_s=onset_s, seed=run),
                           model_name=MODEL, version=version)
    triton.load_versions(MODEL, [1, version])  # instances start now: the onset clock with them
    return triton, version


def measure(load: SteadyLoad, watch: RoutingWatch, candidate: int, decided_at: float | None) -> dict:
    responses = load.snapshot()
    failures = [r.at for r in responses if r.status != 200]
    onset = min(failures) if failures else None
    from_candidate = [r.at for r in responses if r.version == str(candidate)]
    out = {"onset_at": onset, "fail_decided_at": decided_at, "routing_flipped_at": watch.flipped_at,
           "requests": len(responses), "failed_answers": len(failures)}
    if onset is not None:
        out["onset_to_fail_s"] = round(decided_at - onset, 2) if decided_at else None
        out["onset_to_100pct_stable_s"] = round(watch.flipped_at - onset, 2) if watch.flipped_at else None
        after = [t for t in from_candidate if watch.flipped_at and t > watch.flipped_at + 0.5]
        out["candidate_answers_after_flip"] = len(after)
    return out


def run_core(state, router, candidate: int, rate: float, onset_s: float) -> dict:
    comps = state["components"]
    target = CanaryTarget(MODEL, candidate, 1, comps["prometheus"]["url"], gateway_url=comps["envoy"]["url"],
                          triton_url=comps["triton"]["url"])
    since = time.time()
    analysis = build_analysis(target, SETTINGS, since=since)
    watch_step = StepWatch(0, onset_s + 120)
    decided_at = None
    with RoutingWatch(router, MODEL, 1) as watch, \
            SteadyLoad(f"{comps['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=rate) as load:
        while True:
            verdict = analysis.poll()
            decision = watch_step.decide(verdict, time.time() - since)
            if decision == "FAIL":
                decided_at = time.time()
                router.apply(RoutingState(MODEL, {1: 100}))
                break
            if decision:
                break
            time.sleep(1.0)
        time.sleep(2)
    return measure(load, watch, candidate, decided_at) | {"decision": decision}


def _conf(candidate: int, onset_s: float) -> dict:
    return {"model": MODEL, "candidate": candidate, "baseline": 1, "min_soak_s": 0, "max_soak_s": onset_s + 120,
            "rollback_on_fail": True, "analysis": {}}


def run_dag_test(state, router, candidate: int, rate: float, onset_s: float, home: Path) -> dict:
    from llm_release.stack.airflow_connections import airflow_env_vars
    from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[1] / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
    env.update(airflow_env_vars(state, s3_keys=(S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)))
    airflow = str(Path(sys.executable).parent / "airflow")
    if not (home / "airflow.db").exists():
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    comps = state["components"]
    with RoutingWatch(router, MODEL, 1) as watch, \
            SteadyLoad(f"{comps['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=rate) as load:
        done = subprocess.run([airflow, "dags", "test", "canary_analysis", "-c", json.dumps(_conf(candidate, onset_s))],
                              env=env, capture_output=True, text=True, timeout=onset_s + 300)
        time.sleep(2)
    kept = _newest_verdict(home)
    return measure(load, watch, candidate, kept.get("decided_at")) | {
        "exit_code": done.returncode, **_rollback_fields(kept, watch)}


def _newest_verdict(home: Path) -> dict:
    """The verdict file the sensor wrote last (it carries when the trigger decided and rolled back)."""
    files = sorted((home / "llm-release" / "verdicts").rglob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) if files else {}


def _rollback_fields(kept: dict, watch: RoutingWatch) -> dict:
    out = {"rollback_error": kept.get("rollback_error")}
    if kept.get("rolled_back_at") and kept.get("decided_at"):
        out["decided_to_rollback_applied_s"] = round(kept["rolled_back_at"] - kept["decided_at"], 2)
    return out


def run_scheduler(state, router, candidate: int, rate: float, onset_s: float, api) -> dict:
    comps = state["components"]
    with RoutingWatch(router, MODEL, 1) as watch, \
            SteadyLoad(f"{comps['envoy']['url']}/v2/models/{MODEL}/generate", rate_per_s=rate) as load:
        run_id = api.trigger("canary_analysis", _conf(candidate, onset_s))
        run = api.wait("canary_analysis", run_id, timeout_s=onset_s + 300)
        time.sleep(2)
    xcom = api.xcom("canary_analysis", run_id, "judge_canary", "canary_verdict") or {}
    return measure(load, watch, candidate, xcom.get("decided_at")) | {"run_state": run["state"],
                                                                      **_rollback_fields(xcom, watch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per way")
    parser.add_argument("--rate", type=float, default=12.0, help="requests a second through the gateway (50/50)")
    parser.add_argument("--onset", type=float, default=30.0, help="seconds after a load before the fault starts")
    parser.add_argument("--ways", default="core,dag_test,scheduler")
    args = parser.parse_args()
    ways = args.ways.split(",")
    results: dict[str, list] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="rollback-bench-") as tmp:
        stack, state, engine = prepare(Path(tmp))
        router = gateway_router(state)
        api = None
        try:
            if "scheduler" in ways:
                from llm_release.stack.airflow import LocalAirflow

                airflow = LocalAirflow(Path(state["state_dir"]))
                af_state = airflow.up()
                api = AirflowApi(af_state["url"], *airflow.login())
            run = 0
            for way in ways:
                for _ in range(args.runs):
                    run += 1
                    triton, candidate = reload_candidate(state, engine, args.onset, run)
                    router.apply(RoutingState(MODEL, {1: 50, candidate: 50}))
                    if way == "core":
                        figures = run_core(state, router, candidate, args.rate, args.onset)
                    elif way == "dag_test":
                        figures = run_dag_test(state, router, candidate, args.rate, args.onset, Path(tmp) / "af-test")
                    else:
                        figures = run_scheduler(state, router, candidate, args.rate, args.onset, api)
                    triton.unload_versions(MODEL, [candidate])
                    slow = (figures.get("onset_to_100pct_stable_s") or 0) - (figures.get("onset_to_fail_s") or 0)
                    if way == "scheduler" and slow > 2:
                        # Where did the time between the verdict and the routing change go?
                        log = Path(state["state_dir"]) / "airflow" / "logs" / "triggerer.log"
                        figures["triggerer_log_tail"] = log.read_text().splitlines()[-40:] if log.exists() else None
                    results[way].append(figures)
                    print(way, json.dumps({k: v for k, v in figures.items() if not k.endswith("_at")}), flush=True)
        finally:
            stack.down()
    summary = {}
    for way, runs in results.items():
        values = [r.get("onset_to_100pct_stable_s") for r in runs if r.get("onset_to_100pct_stable_s") is not None]
        fail = [r.get("onset_to_fail_s") for r in runs if r.get("onset_to_fail_s") is not None]
        summary[way] = {"runs": len(runs), "rolled_back": len(values),
                        "onset_to_100pct_stable_s": {"median": _median(values), "max": max(values, default=None)},
                        "onset_to_fail_s": {"median": _median(fail), "max": max(fail, default=None)}}
    print(f"{'way':<12}{'onset -> FAIL (median)':>24}{'onset -> 100% stable (median / max)':>38}")
    for way, s in summary.items():
        f, r = s["onset_to_fail_s"], s["onset_to_100pct_stable_s"]
        print(f"{way:<12}{_s(f['median']):>24}{_s(r['median']) + ' / ' + _s(r['max']):>38}")
    write_results("rollback_time", {"settings": vars(args), "summary": summary, "runs": results})


def _median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 2)


def _s(value) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    main()
