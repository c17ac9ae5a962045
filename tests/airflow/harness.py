"""Run DAGs from tests in their own process and AIRFLOW_HOME, against the session's stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
RUNNER = Path(__file__).resolve().parent / "dag_runner.py"


def airflow_environment(home: Path, stack_state: dict) -> dict[str, str]:
    """An isolated Airflow (SQLite in `home`) whose connections and variables are the stack's."""
    from llm_release.stack.airflow_connections import airflow_env_vars
    from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    })
    env.update(airflow_env_vars(stack_state, s3_keys=(S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)))
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
    return env


def run_runner(env: dict[str, str], *args: str) -> dict:
    out = subprocess.run([sys.executable, str(RUNNER), *args], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise AssertionError(f"runner printed no result; rc={out.returncode}\n{out.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    # What a person would read in the task logs (dag.test prints them): the last of it.
    result["output"] = (out.stdout + out.stderr)[-30000:]
    return result


def dag_test(env: dict[str, str], dag_id: str, conf: dict) -> dict:
    return run_runner(env, "test", str(DAGS), dag_id, json.dumps(conf))


def parse_dags(env: dict[str, str]) -> dict:
    return run_runner(env, "parse", str(DAGS))


def run_operator(env: dict[str, str], classpath: str, **kwargs) -> dict:
    return run_runner(env, "operator", classpath, json.dumps(kwargs))
