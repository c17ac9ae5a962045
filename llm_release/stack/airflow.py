"""A local Airflow 3 against the running stack: API server, scheduler, DAG processor, triggerer.

`llm-release airflow up` is the one command between a running stack and a working Airflow UI:
the four components run from this virtualenv (their `airflow` children found on PATH, which
`airflow standalone` gets wrong when the venv is not activated), share one `airflow.cfg` under
the stack's state directory (so `AIRFLOW_HOME=... airflow dags list` sees the same Airflow),
and read this repository's `dags/`. The stack's connections and variables are imported into
Airflow's metadata database, where the UI lists them and a person can edit them; the
components get no `AIRFLOW_CONN_*` or `AIRFLOW_VAR_*` from the caller's shell, which would
silently shadow the database.

`up` returns only when every component is alive, the health endpoint says healthy and the
DAG processor has parsed every DAG file, so a DAG can be triggered the moment it returns. A
component that dies or never becomes healthy stops the start with its log tail, and nothing is
left running. Every process carries a marker variable, so `down` finds them all.
"""

from __future__ import annotations

import base64
import configparser
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from llm_release.errors import StackAlreadyRunning, StackError
from llm_release.fsutil import write_atomically
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

AIRFLOW_MARKER_VAR = "LLM_RELEASE_AIRFLOW_ID"
# Started in this order; the scheduler is stopped first so it launches nothing while the rest go.
COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
ADMIN_USER = "admin"
DEFAULT_PORT = 8080
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def repo_dags_folder() -> Path:
    """This checkout's dags/ (the project is installed in editable mode from it)."""
    return Path(__file__).resolve().parents[2] / "dags"


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def might_hold_a_dag(path: Path) -> bool:
    """Airflow's own safe-mode rule: a .py file that mentions both 'airflow' and 'dag'."""
    data = path.read_bytes().lower()
    return b"airflow" in data and b"dag" in data


class LocalAirflow:
    """Start, inspect and stop the Airflow of the stack in `state_dir`.

    Layout under `<state_dir>/airflow/`: `home/` (AIRFLOW_HOME: airflow.cfg, airflow.db,
    passwords.json, task logs), `logs/<component>.log`, `airflow-state.json` (pids, URL).
    """

    def __init__(self, state_dir: Path | None = None):
        from llm_release.stack.local import LocalStack

        self.stack = LocalStack(state_dir)
        self.root = self.stack.state_dir / "airflow"
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.state_file = self.root / "airflow-state.json"
        self.passwords_file = self.home / "passwords.json"
        self.config_file = self.home / "airflow.cfg"

    # -- state ------------------------------------------------------------------------------
    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def is_running(self) -> bool:
        state = self.read_state()
        return bool(state) and any(pid_alive(c["pid"]) for c in state["components"].values())

    def env(self) -> dict[str, str]:
        """What a shell needs to run `airflow` CLI commands against this Airflow."""
        return {"AIRFLOW_HOME": str(self.home)}

    def login(self) -> tuple[str, str]:
        return ADMIN_USER, json.loads(self.passwords_file.read_text())[ADMIN_USER]

    # -- up ---------------------------------------------------------------------------------
    def up(self, *, port: int | None = None, host: str = "127.0.0.1", dags_folder: Path | None = None,
           timeout_s: float = 300.0) -> dict:
        """Start every component against the running stack; return the state once usable."""
        if self.is_running():
            state = self.read_state()
            raise StackAlreadyRunning(f"Airflow is already running at {state['url']} (state in {self.root}); "
                                      "use `llm-release airflow status` or `llm-release airflow down`")
        stack_state = self.stack.read_state()
        if not stack_state or not self.stack.is_running():
            raise StackError(f"no running stack in {self.stack.state_dir}: start it first with `llm-release stack up`")
        airflow_bin = Path(sys.executable).parent / "airflow"
        if not airflow_bin.exists():
            raise StackError(f"Airflow is not installed in {Path(sys.executable).parent.parent}; "
                             "run scripts/bootstrap.sh (it installs the pinned Airflow into .venv)")
        dags = Path(dags_folder or repo_dags_folder()).resolve()
        if not dags.is_dir():
            raise StackError(f"DAG folder {dags} does not exist; pass --dags-folder")
        if self.read_state():
            self.down()  # the remains of a crashed Airflow
        started = time.monotonic()
        for d in (self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        port = port or (DEFAULT_PORT if _port_is_free(host, DEFAULT_PORT) else free_port())
        if not _port_is_free(host, port):
            raise StackError(f"port {port} on {host} is in use; choose another with --port")
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        self._write_config(dags, host=host, port=port, url=url)
        password = self._ensure_password()
        airflow_id = uuid.uuid4().hex[:12]
        env = self._component_env(airflow_bin.parent, airflow_id)
        state = {"airflow_id": airflow_id, "url": url, "port": port, "host": host, "home": str(self.home),
                 "dags_folder": str(dags), "stack_id": stack_state["stack_id"], "components": {}}
        try:
            self._prepare_database(airflow_bin, env, stack_state)
            for name in COMPONENTS:
                proc = spawn(f"airflow {name}", [str(airflow_bin), name], log=self.logs / f"{name}.log", env=env,
                             cwd=self.home)
                state["components"][name] = {"pid": proc.pid, "pgid": proc.pid, "log": str(proc.log)}
            write_atomically(self.state_file, json.dumps(state, indent=2))
            token = self._wait_healthy(state, password, timeout_s)
            state["dags"] = self._wait_dags_parsed(state, token, dags, started + timeout_s)
            state["version"] = self._api(url, "/api/v2/version", token).get("version")
        except BaseException:
            write_atomically(self.state_file, json.dumps(state, indent=2))
            self.down()
            raise
        state["connections"] = sorted(json.loads(Path(stack_state["connections"]["json"]).read_text()))
        state["variables"] = sorted(json.loads(Path(stack_state["connections"]["variables"]).read_text()))
        state["start_s"] = round(time.monotonic() - started, 1)
        write_atomically(self.state_file, json.dumps(state, indent=2))
        return state

    def _write_config(self, dags: Path, *, host: str, port: int, url: str) -> None:
        """airflow.cfg with this Airflow's settings; secrets generated once and kept across ups
        (the Fernet key encrypts the connections in the database)."""
        cfg = configparser.ConfigParser(interpolation=None)
        if self.config_file.exists():
            cfg.read(self.config_file)

        def keep_or_make(section: str, key: str, make) -> str:
            return cfg.get(section, key, fallback="") or make()

        settings = {
            "core": {
                "dags_folder": str(dags),
                "load_examples": "False",
                "executor": "LocalExecutor",
                "parallelism": "4",
                "auth_manager": SIMPLE_AUTH_MANAGER,
                "simple_auth_manager_users": f"{ADMIN_USER}:admin",
                "simple_auth_manager_passwords_file": str(self.passwords_file),
                "execution_api_server_url": f"{url}/execution/",
                "fernet_key": keep_or_make("core", "fernet_key",
                                           lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()),
            },
            "database": {"sql_alchemy_conn": f"sqlite:///{self.home / 'airflow.db'}"},
            "api": {"host": host, "port": str(port), "workers": "1",
                    "secret_key": keep_or_make("api", "secret_key", lambda: secrets.token_urlsafe(24))},
            "api_auth": {"jwt_secret": keep_or_make("api_auth", "jwt_secret", lambda: secrets.token_urlsafe(32))},
            "logging": {"base_log_folder": str(self.home / "logs"),
                        # Each Airflow on the machine serves its task logs on its own ports.
                        "worker_log_server_port": str(free_port()),
                        "trigger_log_server_port": str(free_port())},
            # New DAG files appear within a minute rather than five.
            "dag_processor": {"refresh_interval": "60"},
        }
        for section, values in settings.items():
            if not cfg.has_section(section):
                cfg.add_section(section)
            for key, value in values.items():
                cfg.set(section, key, value)
        buffer = io.StringIO()
        buffer.write("# Written by `llm-release airflow up` on every start; other settings are Airflow's defaults.\n")
        cfg.write(buffer)
        write_atomically(self.config_file, buffer.getvalue(), mode=0o600)

    def _ensure_password(self) -> str:
        if self.passwords_file.exists():
            return json.loads(self.passwords_file.read_text())[ADMIN_USER]
        password = secrets.token_urlsafe(12)
        write_atomically(self.passwords_file, json.dumps({ADMIN_USER: password}), mode=0o600)
        return password

    def _component_env(self, venv_bin: Path, airflow_id: str) -> dict[str, str]:
        # Nothing Airflow-related from the caller's shell: AIRFLOW_CONN_*/AIRFLOW_VAR_* would
        # shadow what the UI shows and edits, AIRFLOW__* would override airflow.cfg.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != MARKER_VAR}
        env.update({"AIRFLOW_HOME": str(self.home), AIRFLOW_MARKER_VAR: airflow_id,
                    "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"})
        return env

    def _prepare_database(self, airflow_bin: Path, env: dict[str, str], stack_state: dict) -> None:
        """Migrate the metadata database, then (re)import the stack's connections and variables:
        its ports change with every `stack up`."""
        from llm_release.stack.airflow_connections import variables_with_descriptions

        files = stack_state["connections"]
        variables = self.root / "variables-import.json"
        write_atomically(variables, json.dumps(variables_with_descriptions(stack_state), indent=2), mode=0o600)
        for what, argv in (
            ("migrating the metadata database", ["db", "migrate"]),
            ("importing the stack's connections", ["connections", "import", files["json"], "--overwrite"]),
            ("importing the stack's variables", ["variables", "import", str(variables),
                                                  "--action-on-existing-key", "overwrite"]),
        ):
            log = self.logs / "setup.log"
            with open(log, "a") as out:
                out.write(f"\n$ airflow {' '.join(argv)}\n")
                out.flush()
                done = subprocess.run([str(airflow_bin), *argv], env=env, cwd=self.home, stdout=out,  # noqa: S603
                                      stderr=subprocess.STDOUT, timeout=300, check=False)
            if done.returncode != 0:
                raise StackError(f"Airflow set-up failed while {what} (exit {done.returncode}); "
                                 f"last lines of {log}:\n{log_tail(log, 20)}")

    def _wait_healthy(self, state: dict, password: str, timeout_s: float) -> str:
        """Until every component is alive and healthy; return an API token."""
        deadline = time.monotonic() + timeout_s
        url, last, waiting = state["url"], "the API server does not answer yet", ["api-server"]
        while True:
            for name, comp in state["components"].items():
                if not pid_alive(comp["pid"]):
                    raise StackError(f"airflow {name} exited during start-up; last lines of {comp['log']}:\n"
                                     f"{log_tail(Path(comp['log']))}")
            health = _health(url)
            if health is not None:
                waiting = [n for n, key in HEALTH_KEYS.items() if health.get(key, {}).get("status") != "healthy"]
                if health.get("metadatabase", {}).get("status") != "healthy":
                    waiting.append("api-server")  # its database check failed
                if not waiting:
                    return self._token(url, password)
                last = f"not yet healthy: {', '.join(waiting)}"
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n} ({state['components'][n]['log']}):\n"
                                  f"{log_tail(Path(state['components'][n]['log']), 15)}" for n in waiting)
                raise StackError(f"Airflow not healthy after {timeout_s:.0f} s ({last})\n{tails}")
            time.sleep(1.0)

    @staticmethod
    def _token(url: str, password: str) -> str:
        resp = requests.post(f"{url}/auth/token", json={"username": ADMIN_USER, "password": password}, timeout=10)
        if resp.status_code not in (200, 201):
            raise StackError(f"Airflow refused the admin login ({resp.status_code}: {resp.text[:200]})")
        return resp.json()["access_token"]

    @staticmethod
    def _api(url: str, path: str, token: str) -> dict:
        resp = requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def _wait_dags_parsed(self, state: dict, token: str, dags: Path, deadline: float) -> list[dict]:
        """Until the DAG processor has parsed every DAG file: each is a DAG or an import error."""
        files = {str(p.relative_to(dags)) for p in dags.rglob("*.py") if might_hold_a_dag(p)}
        while True:
            found = self._api(state["url"], "/api/v2/dags?limit=1000", token)["dags"]
            errors = self._api(state["url"], "/api/v2/importErrors?limit=1000", token)["import_errors"]
            seen = {d.get("relative_fileloc") or "" for d in found} | {
                next((f for f in files if e["filename"].endswith(f)), e["filename"]) for e in errors}
            if files <= seen:
                return [{"dag_id": d["dag_id"], "is_paused": d["is_paused"], "file": d.get("relative_fileloc"),
                         "schedule": d.get("timetable_summary")} for d in found] + [
                    {"import_error": e["filename"], "detail": (e.get("stack_trace") or "").strip().splitlines()[-1:]}
                    for e in errors]
            if time.monotonic() > deadline:
                comp = state["components"]["dag-processor"]
                raise StackError(f"the DAG processor has not parsed {sorted(files - seen)} in {dags}; last lines of "
                                 f"{comp['log']}:\n{log_tail(Path(comp['log']), 15)}")
            time.sleep(1.0)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict:
        state = self.read_state()
        if not state:
            return {"root": str(self.root), "running": False, "components": {}}
        health = _health(state["url"]) if any(pid_alive(c["pid"]) for c in state["components"].values()) else None
        comps = {}
        for name, comp in state["components"].items():
            running = pid_alive(comp["pid"])
            if not running:
                healthy, detail = False, "not running"
            elif name == "api-server":
                healthy, detail = health is not None, "answers" if health is not None else "no answer"
            else:
                entry = (health or {}).get(HEALTH_KEYS[name], {})
                healthy = entry.get("status") == "healthy"
                detail = entry.get("status") or "unknown"
            comps[name] = {"pid": comp["pid"], "running": running, "healthy": healthy, "detail": detail,
                           "log": comp["log"]}
        return {"root": str(self.root), "url": state["url"], "home": state["home"],
                "running": any(c["running"] for c in comps.values()),
                "healthy": all(c["healthy"] for c in comps.values()), "components": comps}

    # -- down -------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every component and anything carrying this Airflow's marker; return what was stopped."""
        state = self.read_state()
        if not state:
            return []
        comps = state["components"]
        if "scheduler" in comps:
            stop_group(comps["scheduler"]["pgid"])
        rest = [c for name, c in comps.items() if name != "scheduler"]
        with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
            list(pool.map(lambda c: stop_group(c["pgid"]), rest))
        leftovers = processes_with_marker(state["airflow_id"], AIRFLOW_MARKER_VAR)
        if leftovers:
            kill_pids(leftovers)
        self.state_file.unlink(missing_ok=True)
        return list(comps)


def _health(url: str) -> dict | None:
    try:
        resp = requests.get(f"{url}/api/v2/monitor/health", timeout=3)
    except requests.RequestException:
        return None
    return resp.json() if resp.status_code == 200 else None
