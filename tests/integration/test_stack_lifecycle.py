"""`llm-release stack up|down|status`: health, no duplicates, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from llm_release.errors import StackAlreadyRunning
from llm_release.stack.local import COMPONENTS, LocalStack
from llm_release.stack.processes import pid_alive, processes_with_marker


def cli(*args, state_dir):
    return subprocess.run([sys.executable, "-m", "llm_release.cli", "stack", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=120)


def test_status_json_reports_each_component_url_and_health(stack):
    out = cli("status", "--json", state_dir=stack["state_dir"])
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert set(status["components"]) == set(COMPONENTS)
    for name, comp in status["components"].items():
        assert comp["healthy"] is True, (name, comp)
        assert comp["url"].startswith("http://127.0.0.1:")


def test_second_up_says_so_instead_of_starting_a_duplicate(stack):
    before = stack["stack"].read_state()
    with pytest.raises(StackAlreadyRunning):
        LocalStack(stack["state_dir"]).up()
    out = cli("up", state_dir=stack["state_dir"])
    assert out.returncode == 1
    assert "already running" in out.stderr
    assert stack["stack"].read_state()["stack_id"] == before["stack_id"]


def test_stack_writes_airflow_connections(stack):
    conns = json.loads(open(stack["connections"]["json"]).read())
    assert conns["triton_default"]["conn_type"] == "triton"
    assert conns["triton_default"]["port"] == stack["ports"]["triton_http"]
    assert conns["llm_artifacts_s3"]["extra"]["endpoint_url"] == stack["components"]["s3"]["url"]
    assert oct(os.stat(stack["connections"]["json"]).st_mode & 0o777) == "0o600"


def test_down_leaves_no_process_even_after_a_component_crashed(tmp_path):
    local = LocalStack(tmp_path / "crashy")
    state = local.up()
    pids = {name: comp["pid"] for name, comp in state["components"].items()}
    assert all(pid_alive(p) for p in pids.values())
    os.kill(pids["triton"], signal.SIGKILL)  # a crash, not a clean stop
    deadline = time.monotonic() + 5
    while pid_alive(pids["triton"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = local.status()
    assert status["components"]["triton"]["running"] is False
    assert status["components"]["envoy"]["healthy"] is True

    out = cli("down", state_dir=tmp_path / "crashy")
    assert out.returncode == 0, out.stderr
    assert not any(pid_alive(p) for p in pids.values())
    assert processes_with_marker(state["stack_id"]) == []
    assert not list((tmp_path / "crashy").glob("state.json"))
    # and a new stack starts in the same place
    again = local.up()
    try:
        assert again["stack_id"] != state["stack_id"]
    finally:
        local.down()
    assert processes_with_marker(again["stack_id"]) == []


def test_s3_endpoint_of_the_connection_stores_and_returns_objects(stack):
    import boto3

    conn = json.loads(open(stack["connections"]["json"]).read())["llm_artifacts_s3"]
    s3 = boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], region_name=conn["extra"]["region_name"],
                      aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(Bucket="artifacts", Key="reference_lm/1/metadata.json", Body=b'{"version": 1}')
    body = s3.get_object(Bucket="artifacts", Key="reference_lm/1/metadata.json")["Body"].read()
    assert body == b'{"version": 1}'
