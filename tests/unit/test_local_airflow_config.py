"""What `llm-release airflow up` writes before it starts anything, and what `stack env` exports.

Starting the real Airflow is tested in tests/integration/test_local_airflow.py; these check the
parts a wrong value in would only show as a confusing failure there.
"""

import configparser
import json
import subprocess
import sys

import pytest

from llm_release.artifacts.targets import parse_targets
from llm_release.errors import SpecError, StackError
from llm_release.stack.airflow import AIRFLOW_MARKER_VAR, LocalAirflow, might_hold_a_dag
from llm_release.stack.airflow_connections import connections_for, variables_for, variables_with_descriptions
from llm_release.stack.processes import MARKER_VAR


@pytest.fixture()
def fake_stack_state(tmp_path):
    """The state.json of a stack as `stack up` writes it (nothing running)."""
    state = {
        "stack_id": "abc", "state_dir": str(tmp_path), "model_repository": str(tmp_path / "model-repository"),
        "ports": {"triton_http": 8000, "triton_grpc": 8001, "triton_metrics": 8002, "gateway": 10000,
                  "envoy_admin": 9901, "envoy_shadow": 10001, "prometheus": 9090, "s3": 5000},
        "components": {"triton": {"url": "http://127.0.0.1:8000", "grpc_url": "127.0.0.1:8001",
                                  "metrics_url": "http://127.0.0.1:8002/metrics"},
                       "envoy": {"url": "http://127.0.0.1:10000", "admin_url": "http://127.0.0.1:9901",
                                 "control_plane_url": "http://xds.local:18090"},
                       "prometheus": {"url": "http://127.0.0.1:9090"}, "s3": {"url": "http://127.0.0.1:5000"}},
    }
    env_file = tmp_path / "airflow" / "airflow.env"
    env_file.parent.mkdir()
    env_file.write_text("export AIRFLOW_CONN_TRITON_DEFAULT='{}'\n")
    state["connections"] = {"env": str(env_file)}
    (tmp_path / "state.json").write_text(json.dumps(state))
    return state


def test_config_keeps_its_secrets_across_starts_and_takes_the_new_port(tmp_path):
    airflow = LocalAirflow(tmp_path)
    airflow.home.mkdir(parents=True)
    airflow._write_config(tmp_path / "dags", host="127.0.0.1", port=18080, url="http://127.0.0.1:18080")
    first = configparser.ConfigParser(interpolation=None)
    first.read(airflow.config_file)
    airflow._write_config(tmp_path / "dags", host="127.0.0.1", port=18081, url="http://127.0.0.1:18081")
    second = configparser.ConfigParser(interpolation=None)
    second.read(airflow.config_file)

    # The Fernet key encrypts the connections already in the database: it must never change.
    for section, key in (("core", "fernet_key"), ("api", "secret_key"), ("api_auth", "jwt_secret")):
        assert first.get(section, key) and first.get(section, key) == second.get(section, key)
    assert second.get("api", "port") == "18081"
    assert second.get("core", "execution_api_server_url") == "http://127.0.0.1:18081/execution/"
    assert second.get("core", "dags_folder") == str(tmp_path / "dags")
    assert second.get("database", "sql_alchemy_conn") == f"sqlite:///{airflow.home / 'airflow.db'}"
    assert second.get("core", "executor") == "LocalExecutor"
    assert airflow.config_file.stat().st_mode & 0o777 == 0o600  # it holds secrets


def test_components_get_nothing_airflow_from_the_callers_shell(tmp_path, monkeypatch):
    # A shell that sourced `stack env` has AIRFLOW_CONN_* set: they would shadow the database.
    monkeypatch.setenv("AIRFLOW_CONN_TRITON_DEFAULT", '{"conn_type": "triton", "host": "stale"}')
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv(MARKER_VAR, "the-stack")
    env = LocalAirflow(tmp_path)._component_env(tmp_path / "venv" / "bin", "af1")
    assert not [k for k in env if k.startswith("AIRFLOW") and k != "AIRFLOW_HOME"]
    assert MARKER_VAR not in env  # `airflow down` must not be confused with the stack's processes
    assert env[AIRFLOW_MARKER_VAR] == "af1"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow" / "home")
    assert env["PATH"].split(":")[0] == str(tmp_path / "venv" / "bin")  # the components' own `airflow` children


def test_the_password_is_made_once_and_kept_private(tmp_path):
    airflow = LocalAirflow(tmp_path)
    airflow.home.mkdir(parents=True)
    password = airflow._ensure_password()
    assert len(password) >= 12 and airflow._ensure_password() == password
    assert airflow.login() == ("admin", password)
    assert airflow.passwords_file.stat().st_mode & 0o777 == 0o600


def test_dag_files_are_found_as_airflow_finds_them(tmp_path):
    (tmp_path / "release.py").write_text("from airflow.sdk import DAG\nwith DAG('x'): pass\n")
    (tmp_path / "helpers.py").write_text("def f():\n    return 1\n")
    assert might_hold_a_dag(tmp_path / "release.py")
    assert not might_hold_a_dag(tmp_path / "helpers.py")


def test_up_refuses_without_a_running_stack_and_starts_nothing(tmp_path):
    with pytest.raises(StackError, match="no running stack"):
        LocalAirflow(tmp_path).up(port=18999)
    assert not (tmp_path / "airflow" / "home").exists()


def test_stack_env_exports_what_the_cli_needs_to_reach_the_stacks_s3(fake_stack_state, tmp_path):
    out = subprocess.run([sys.executable, "-m", "llm_release.cli", "stack", "env", "--state-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    exports = dict(line[len("export "):].split("=", 1) for line in out.stdout.splitlines())
    assert exports["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000"
    assert exports["AWS_ACCESS_KEY_ID"] and exports["AWS_SECRET_ACCESS_KEY"] and exports["AWS_DEFAULT_REGION"]
    assert exports["LLM_RELEASE_STATE_DIR"] == str(tmp_path)
    assert "AIRFLOW_CONN_TRITON_DEFAULT" in exports


def test_the_stacks_sync_region_only_reports_on_scheduled_runs(fake_stack_state):
    (target,) = parse_targets(variables_for(fake_stack_state)["llm_release_sync_targets"])
    assert target.scheduled == "dry_run"
    assert target.dry_run_for(scheduled_run=True, asked=False)
    assert not target.dry_run_for(scheduled_run=False, asked=False)  # a run triggered by hand syncs
    assert target.dry_run_for(scheduled_run=False, asked=True)
    described = variables_with_descriptions(fake_stack_state)["llm_release_sync_targets"]
    assert json.loads(described["value"]) == variables_for(fake_stack_state)["llm_release_sync_targets"]
    assert described["description"]


def test_regions_sync_on_schedule_by_default_and_refuse_unknown_modes():
    base = {"region": "eu", "model_repository": "/models", "source": {"kind": "s3", "conn_id": "a", "bucket": "b"}}
    (target,) = parse_targets([base])
    assert target.scheduled == "sync" and not target.dry_run_for(scheduled_run=True, asked=False)
    with pytest.raises(SpecError, match=r"targets\[0\].scheduled.*use sync"):
        parse_targets([dict(base, scheduled="sometimes")])


def test_every_stack_connection_says_what_it_is(fake_stack_state):
    conns = connections_for(fake_stack_state, s3_keys=("k", "s", "us-east-1"))
    assert all(str(fake_stack_state["state_dir"]) in c["description"] for c in conns.values())
