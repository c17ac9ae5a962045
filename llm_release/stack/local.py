"""The local release stack: Triton, Envoy, Prometheus and an S3 endpoint as child processes.

Everything lives in one state directory: configs, logs, data, the model repository standing in
for the PVC, and `state.json`, which records pids, process groups and URLs so that `status`
and `down` work from any later process (the CLI, a test session, the rehearsal).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from llm_release.errors import StackAlreadyRunning, StackError
from llm_release.fsutil import write_atomically
from llm_release.stack import envoy, prometheus, triton, xds
from llm_release.stack.airflow_connections import ARTIFACT_BUCKET, write_airflow_connections
from llm_release.stack.processes import (
    MARKER_VAR,
    free_port,
    kill_pids,
    log_tail,
    pid_alive,
    processes_with_marker,
    spawn,
    stop_group,
)

COMPONENTS = ("triton", "xds", "envoy", "prometheus", "s3")
S3_ACCESS_KEY = "local-stack"  # moto accepts any key pair; these are not secrets
S3_SECRET_KEY = "local-stack-secret"
S3_REGION = "us-east-1"


def default_state_dir() -> Path:
    env = os.environ.get("LLM_RELEASE_STATE_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "llm-release" / "stack"


@dataclass
class ComponentStatus:
    name: str
    url: str
    healthy: bool
    pid: int | None
    running: bool
    detail: str = ""


class LocalStack:
    """Start, inspect and stop the stack recorded in `state_dir`."""

    def __init__(self, state_dir: Path | None = None):
        self.state_dir = Path(state_dir or default_state_dir()).resolve()
        self.state_file = self.state_dir / "state.json"

    # -- state --------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _write_state(self, state: dict) -> None:
        write_atomically(self.state_file, json.dumps(state, indent=2))

    def is_running(self) -> bool:
        state = self.read_state()
        return bool(state) and any(pid_alive(c["pid"]) for c in state["components"].values())

    @property
    def model_repository(self) -> Path:
        return self.state_dir / "model-repository"

    # -- up -------------------------------------------------------------------------------
    def up(self, *, timeout_s: float = 90.0) -> dict:
        """Start every component, wait until each is healthy, return the state."""
        if self.is_running():
            raise StackAlreadyRunning(
                f"a stack is already running in {self.state_dir}; use `llm-release stack status` or `stack down`"
            )
        if self.read_state():
            self.down()  # leftovers of a crashed stack: clean them first
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        self.model_repository.mkdir(exist_ok=True)
        stack_id = uuid.uuid4().hex[:12]
        env = dict(os.environ, **{MARKER_VAR: stack_id})
        ports = {name: free_port() for name in
                 ("triton_http", "triton_grpc", "triton_metrics", "gateway", "envoy_admin", "envoy_shadow",
                  "xds_grpc", "xds_http", "prometheus", "s3")}
        state = {
            "stack_id": stack_id,
            "state_dir": str(self.state_dir),
            "model_repository": str(self.model_repository),
            "ports": ports,
            "components": {},
        }
        # A fresh stack starts with no routing; restarting one component keeps it.
        shutil.rmtree(self.state_dir / XDS_STORE, ignore_errors=True)
        try:
            self._start_all(state, env, logs)
            self._write_state(state)
            self._wait_healthy(state, timeout_s)
        except BaseException:
            self._write_state(state)
            self.down()
            raise
        _create_bucket(state["components"]["s3"]["url"], ARTIFACT_BUCKET)
        _write_reference_checkpoint(state)
        state["cold_start_s"] = round(time.monotonic() - started, 3)
        state["connections"] = write_airflow_connections(self.state_dir, state, s3_keys=(S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION))
        write_atomically(self.state_dir / ENVIRONMENTS_FILE,
                         json.dumps({"environments": local_environments(state)}, indent=2))
        state["environments"] = str(self.state_dir / ENVIRONMENTS_FILE)
        self._write_state(state)
        return state

    COMPONENTS = ("triton", "xds", "envoy", "prometheus", "s3")

    def _start_all(self, state: dict, env: dict[str, str], logs: Path) -> None:
        for name in self.COMPONENTS:
            getattr(self, f"_start_{name}")(state, env, logs)

    def _start_triton(self, state: dict, env: dict[str, str], logs: Path) -> None:
        ports, host = state["ports"], "127.0.0.1"
        install = triton.find_triton()
        backend_dir = triton.prepare_backend_dir(install, self.state_dir / "backends")
        shm_prefix = f"llmrel{state['stack_id']}"
        proc = spawn("triton", triton.triton_argv(
            install, model_repository=self.model_repository, backend_dir=backend_dir,
            http_port=ports["triton_http"], grpc_port=ports["triton_grpc"], metrics_port=ports["triton_metrics"],
            shm_prefix=shm_prefix,
        ), log=logs / "triton.log", env=triton.triton_env(install, env))
        state["components"]["triton"] = self._record(proc, url=f"http://{host}:{ports['triton_http']}",
                                                     health="/v2/health/live", extra={
                                                         "grpc_url": f"{host}:{ports['triton_grpc']}",
                                                         "metrics_url": f"http://{host}:{ports['triton_metrics']}/metrics",
                                                         "shm_prefix": shm_prefix})

    def _start_xds(self, state: dict, env: dict[str, str], logs: Path) -> None:
        ports, host = state["ports"], "127.0.0.1"
        proc = spawn("xds", xds.xds_argv(xds.find_xds_python(), self.state_dir / XDS_STORE,
                                         grpc_port=ports["xds_grpc"], http_port=ports["xds_http"]),
                     log=logs / "xds.log", env=env, cwd=xds.REPO_ROOT)
        state["components"]["xds"] = self._record(proc, url=f"http://{host}:{ports['xds_http']}", health="/healthz",
                                                  extra={"grpc": f"{host}:{ports['xds_grpc']}"})

    def _start_envoy(self, state: dict, env: dict[str, str], logs: Path) -> None:
        ports, host = state["ports"], "127.0.0.1"
        bootstrap = envoy.write_bootstrap(self.state_dir, listen_port=ports["gateway"], admin_port=ports["envoy_admin"],
                                          shadow_port=ports["envoy_shadow"], control_plane=(host, ports["xds_grpc"]))
        proc = spawn("envoy", envoy.envoy_argv(envoy.find_envoy(), bootstrap, base_id=ports["envoy_admin"],
                                               log_path=logs / "envoy-access.log"),
                     log=logs / "envoy.log", env=env)
        state["components"]["envoy"] = self._record(proc, url=f"http://{host}:{ports['gateway']}", health="admin:/ready",
                                                    extra={"admin_url": f"http://{host}:{ports['envoy_admin']}",
                                                           "control_plane_url": state["components"]["xds"]["url"],
                                                           "shadow_port": ports["envoy_shadow"]})

    def _start_prometheus(self, state: dict, env: dict[str, str], logs: Path) -> None:
        ports, host = state["ports"], "127.0.0.1"
        prom_cfg = prometheus.write_config(self.state_dir, triton_metrics=f"{host}:{ports['triton_metrics']}",
                                           envoy_admin=f"{host}:{ports['envoy_admin']}")
        proc = spawn("prometheus", prometheus.prometheus_argv(
            prometheus.find_prometheus(), prom_cfg, data_dir=self.state_dir / "prometheus-data", port=ports["prometheus"]),
            log=logs / "prometheus.log", env=env)
        state["components"]["prometheus"] = self._record(proc, url=f"http://{host}:{ports['prometheus']}",
                                                         health="/-/ready")

    def _start_s3(self, state: dict, env: dict[str, str], logs: Path) -> None:
        ports, host = state["ports"], "127.0.0.1"
        moto = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
        if not moto:
            raise StackError("moto_server is not installed; run the README set-up (scripts/bootstrap.sh)")
        proc = spawn("s3", [moto, "-H", host, "-p", str(ports["s3"])], log=logs / "s3.log", env=env)
        state["components"]["s3"] = self._record(proc, url=f"http://{host}:{ports['s3']}", health="/moto-api/")

    # -- one component ----------------------------------------------------------------------
    def stop_component(self, name: str) -> None:
        """Stop one component and leave the others running (e.g. Prometheus, to see a gate without data)."""
        state = self._running_state(name)
        stop_group(state["components"][name]["pgid"])

    def start_component(self, name: str, *, timeout_s: float = 60.0) -> dict:
        """Start one stopped component again on its ports, with its data (Prometheus keeps its history)."""
        state = self._running_state(name)
        if pid_alive(state["components"][name]["pid"]):
            raise StackError(f"{name} is already running (pid {state['components'][name]['pid']})")
        logs = self.state_dir / "logs"
        env = dict(os.environ, **{MARKER_VAR: state["stack_id"]})
        getattr(self, f"_start_{name}")(state, env, logs)
        self._write_state(state)
        self._wait_healthy({**state, "components": {name: state["components"][name]}}, timeout_s)
        return state["components"][name]

    def restart_component(self, name: str, *, kill: bool = False, timeout_s: float = 60.0) -> dict:
        """Stop one component (SIGKILL with `kill`, as a crash would) and start it again on its ports."""
        state = self._running_state(name)
        pgid = state["components"][name]["pgid"]
        if kill:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop_group(pgid, grace_s=0 if kill else 10.0)
        return self.start_component(name, timeout_s=timeout_s)

    def _running_state(self, name: str) -> dict:
        state = self.read_state()
        if not state:
            raise StackError(f"no stack in {self.state_dir}")
        if name not in self.COMPONENTS:
            raise StackError(f"{name!r} is not a component of the stack ({', '.join(self.COMPONENTS)})")
        return state

    @staticmethod
    def _record(proc, *, url: str, health: str, extra: dict | None = None) -> dict:
        return {"pid": proc.pid, "pgid": proc.pid, "log": str(proc.log), "url": url, "health": health, **(extra or {})}

    def _wait_healthy(self, state: dict, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(state["components"])
        while pending:
            for name in sorted(pending):
                comp = state["components"][name]
                if not pid_alive(comp["pid"]):
                    raise StackError(f"{name} exited during start-up; last lines of {comp['log']}:\n{log_tail(Path(comp['log']))}")
                if _probe(comp)[0]:
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                details = "\n".join(f"--- {n} ({state['components'][n]['log']}):\n{log_tail(Path(state['components'][n]['log']), 10)}" for n in pending)
                raise StackError(f"not healthy after {timeout_s:.0f} s: {', '.join(sorted(pending))}\n{details}")
            if pending:
                time.sleep(0.2)

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict:
        state = self.read_state()
        if not state:
            return {"state_dir": str(self.state_dir), "running": False, "components": {}}
        with ThreadPoolExecutor(max_workers=len(state["components"])) as pool:
            comps = {st.name: st.__dict__ for st in pool.map(self._component_status, state["components"].items())}
        return {
            "state_dir": str(self.state_dir),
            "stack_id": state["stack_id"],
            "running": any(c["running"] for c in comps.values()),
            "healthy": all(c["healthy"] for c in comps.values()),
            "model_repository": state["model_repository"],
            "components": comps,
        }

    @staticmethod
    def _component_status(item) -> ComponentStatus:
        name, comp = item
        running = pid_alive(comp["pid"])
        healthy, detail = _probe(comp) if running else (False, "not running")
        return ComponentStatus(name=name, url=comp["url"], healthy=healthy, pid=comp["pid"], running=running, detail=detail)

    # -- down -----------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every component (and any process that escaped its group); return what was stopped.

        An Airflow started on this stack (`llm-release airflow up`) is stopped first: it would
        only fail against a stack that is gone."""
        from llm_release.stack.airflow import LocalAirflow

        stopped = [f"airflow {c}" for c in LocalAirflow(self.state_dir).down()]
        state = self.read_state()
        if not state:
            return stopped
        comps = state["components"]
        # The gateway goes first: its keep-alive connections would hold Triton in its exit timeout.
        if "envoy" in comps:
            stop_group(comps["envoy"]["pgid"])
        rest = [c for name, c in comps.items() if name != "envoy"]
        with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
            list(pool.map(lambda c: stop_group(c["pgid"]), rest))
        stopped.extend(comps)
        leftovers = processes_with_marker(state["stack_id"])
        if leftovers:
            kill_pids(leftovers)
        prefix = comps.get("triton", {}).get("shm_prefix")
        if prefix:
            for shm in Path("/dev/shm").glob(f"{prefix}*"):
                shm.unlink(missing_ok=True)
        (self.state_dir / ENVIRONMENTS_FILE).unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        return stopped


def s3_client_env(state: dict) -> dict[str, str]:
    """The standard AWS variables that point boto3 and the aws CLI at the stack's S3."""
    return {"AWS_ENDPOINT_URL": state["components"]["s3"]["url"], "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_DEFAULT_REGION": S3_REGION}


ENVIRONMENTS_FILE = "environments.json"
XDS_STORE = "xds-store"


def local_environments(state: dict) -> list[dict]:
    """The stack as environment specs (llm_release.environments): it plays staging and
    production at once (one gateway, one Triton), so a release can be rehearsed through both,
    production's rules (approval, a staging pass first) included."""
    comps, ports = state["components"], state["ports"]
    base = {
        "region": "local",
        # The runtime is read from Triton's metrics ("cpu": no GPU there), so every load here
        # passes the provenance gate the way a GPU environment's does.
        "triton": {"url": comps["triton"]["url"], "topology": "versions", "model_repository": state["model_repository"],
                   "grpc_url": comps["triton"]["grpc_url"], "runtime": {"metrics_url": comps["triton"]["metrics_url"]}},
        "router": {"kind": "envoy", "admin_url": comps["envoy"]["admin_url"],
                   "control_plane_url": comps["envoy"]["control_plane_url"],
                   "shadow_listener": f"127.0.0.1:{ports['envoy_shadow']}"},
        "prometheus_url": comps["prometheus"]["url"],
        "gateway_url": comps["envoy"]["url"],
        "disabled_checks": {"gpu_headroom": "local stack: Triton on CPU (--allow-gpu-metrics=false)"},
        # An unpaused daily deprecation on a laptop reports what it would retire; a run
        # triggered by hand retires for real.
        "scheduled_retirement": "dry_run",
    }
    return [dict(base, name="staging", approval_required=False),
            dict(base, name="production", approval_required=True, requires_passed="staging")]


def local_environment(state: dict, name: str = "staging"):
    from llm_release.environments import EnvironmentSet

    return EnvironmentSet.from_doc(local_environments(state)).get(name)


def gateway_router(state: dict):
    """The EnvoyRouter of a running stack (one Triton serving every version)."""
    return local_environment(state).router_instance()


def _write_reference_checkpoint(state: dict) -> None:
    """The checkpoint the nightly build's local settings point at (deterministic; 0.2 s)."""
    from llm_release.engine.checkpoint import make_reference_checkpoint
    from llm_release.stack.airflow_connections import reference_checkpoint_dir

    target = reference_checkpoint_dir(state)
    if not all((target / name).exists() for name in ("config.json", "weights.npz")):
        make_reference_checkpoint(target, seed=1)


def _create_bucket(endpoint: str, bucket: str) -> None:
    """The artifact bucket the stack's sync target points at."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION,
                          aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
    client.create_bucket(Bucket=bucket)


def _probe(comp: dict) -> tuple[bool, str]:
    health = comp["health"]
    url = comp["admin_url"] + health[len("admin:"):] if health.startswith("admin:") else comp["url"] + health
    try:
        resp = requests.get(url, timeout=2)
    except requests.RequestException as exc:
        return False, type(exc).__name__
    return resp.status_code == 200, f"HTTP {resp.status_code}"
