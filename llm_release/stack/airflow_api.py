"""Airflow's REST API as a client uses it: a token from the login, then /api/v2.

For the local Airflow (`llm-release airflow up`): its tests and benchmarks trigger DAG runs,
wait for them, and read task states, logs and XComs the way a person's tooling would.
"""

from __future__ import annotations

import json
import time

import requests


class AirflowApi:
    def __init__(self, url: str, user: str, password: str):
        self.url = url
        token = requests.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=10)
        token.raise_for_status()
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def get(self, path: str, **params):
        resp = requests.get(f"{self.url}/api/v2{path}", headers=self.headers, params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def trigger(self, dag_id: str, conf: dict) -> str:
        resp = requests.post(f"{self.url}/api/v2/dags/{dag_id}/dagRuns", headers=self.headers, timeout=30,
                             json={"logical_date": None, "conf": conf})
        if resp.status_code != 200:
            raise RuntimeError(f"triggering {dag_id} was refused ({resp.status_code}): {resp.text[:500]}")
        return resp.json()["dag_run_id"]

    def wait(self, dag_id: str, run_id: str, timeout_s: float = 240, poll_s: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout_s
        run = {"state": "unknown"}
        while time.monotonic() < deadline:
            run = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(poll_s)
        raise TimeoutError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f} s")

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict]:
        return {t["task_id"]: t for t in self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        """A task's XCom value, or None when it has none under `key`."""
        resp = requests.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                            headers=self.headers, timeout=30)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        value = resp.json().get("value")
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def log(self, dag_id: str, run_id: str, task: dict) -> str:
        """The task log as the UI shows it: every event and every error's type and message."""
        doc = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task['task_id']}/logs/{task['try_number']}")
        lines = []
        for entry in doc["content"]:
            if isinstance(entry, dict):
                lines.append(str(entry.get("event", "")))
                lines += [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in entry.get("error_detail") or []]
        return "\n".join(lines)

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self.tasks(dag_id, run_id).get(task_id, {}).get("state")

    def wait_for_task(self, dag_id: str, run_id: str, task_id: str, states, timeout_s: float = 240,
                      poll_s: float = 1.0) -> str:
        """Wait until `task_id` is in one of `states` (e.g. "awaiting_input" for an approval)."""
        deadline = time.monotonic() + timeout_s
        state = None
        while time.monotonic() < deadline:
            state = self.task_state(dag_id, run_id, task_id)
            if state in states:
                return state
            time.sleep(poll_s)
        raise TimeoutError(f"{dag_id} {run_id} {task_id} still {state} after {timeout_s:.0f} s")

    def approval(self, dag_id: str, run_id: str, task_id: str) -> dict:
        """The human-in-the-loop request of a task: subject, body (the evidence), options, who may answer."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails")

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str, params_input: dict | None = None) -> dict:
        """Answer a human-in-the-loop task (e.g. "Approve" / "Reject") as the logged-in user."""
        resp = requests.patch(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
                              headers=self.headers, timeout=30,
                              json={"chosen_options": [option], "params_input": params_input or {}})
        if resp.status_code != 200:
            raise RuntimeError(f"answering {task_id} was refused ({resp.status_code}): {resp.text[:500]}")
        return resp.json()

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> dict:
        """Start tasks of a run again, as "Clear" in the UI does (their next try runs from the start)."""
        resp = requests.post(f"{self.url}/api/v2/dags/{dag_id}/clearTaskInstances", headers=self.headers, timeout=30,
                             json={"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False,
                                   "reset_dag_runs": False})
        if resp.status_code != 200:
            raise RuntimeError(f"clearing {task_ids} was refused ({resp.status_code}): {resp.text[:500]}")
        return resp.json()
