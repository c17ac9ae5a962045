"""The triton_load_probe DAG, run with dag.test() against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "tests" / "airflow" / "dag_runner.py"
MODEL = "reference_lm"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, stack):
    from llm_release.stack.airflow_connections import airflow_env_vars
    from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY

    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    })
    env.update(airflow_env_vars(stack["state"], s3_keys=(S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION)))
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    return env


def run_runner(env, *args) -> dict:
    out = subprocess.run([sys.executable, str(RUNNER), *args], env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"runner printed no result; rc={out.returncode}\n{out.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_dags_parse_without_errors(airflow_env):
    result = run_runner(airflow_env, "parse", str(REPO / "dags"))
    assert result["import_errors"] == {}
    assert "triton_load_probe" in result["dag_ids"]
    assert result["core_modules_loaded"] == []


def test_load_probe_dag_loads_a_version_beside_the_serving_one(airflow_env, triton, engines):
    from llm_release.model_repo import install_version

    triton.load_versions(MODEL, [1])
    install_version(engines["dir"] / "engine3", triton.model_repository, model_name=MODEL, version=3)
    result = run_runner(airflow_env, "test", str(REPO / "dags"), "triton_load_probe",
                        json.dumps({"model": MODEL, "version": 3}))
    assert result.get("state") == "success", result
    assert result["tasks"] == {"load_version": "success", "probe_version": "success"}
    assert triton.ready_versions(MODEL) == [1, 3]  # v1 kept serving, v3 added
    triton.load_versions(MODEL, [1, 2])  # restore what the other tests expect


def test_invalid_params_are_refused_before_any_task_runs(airflow_env, triton):
    before = triton.ready_versions(MODEL)
    result = run_runner(airflow_env, "test", str(REPO / "dags"), "triton_load_probe",
                        json.dumps({"model": MODEL, "version": 0}))
    assert result.get("error") == "ParamValidationError", result
    assert "version" in result["message"]
    assert triton.ready_versions(MODEL) == before
