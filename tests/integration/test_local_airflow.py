"""`llm-release airflow up` on the session's stack, used as a person and a client would use it:
runs triggered through the REST API and watched to the end, the UI in a real browser, the
`airflow` CLI against the same home, and `down` leaving no process behind.

One Airflow for the module (it takes tens of seconds to start on two cores).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from llm_release.stack.airflow_api import AirflowApi

from llm_release.stack.processes import free_port, processes_with_marker

MODEL = "reference_lm"
CHROMIUM = "/usr/bin/chromium"


def cli(*args, timeout=400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run([sys.executable, "-m", "llm_release.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def airflow_processes(home: Path) -> list[int]:
    """Every live process of an Airflow with this AIRFLOW_HOME (components, workers, log servers)."""
    return processes_with_marker(str(home), "AIRFLOW_HOME")


def test_a_start_that_does_not_become_healthy_says_why_and_leaves_nothing(stack):
    home = Path(stack["state_dir"]) / "airflow" / "home"
    out = cli("airflow", "up", "--state-dir", stack["state_dir"], "--port", str(free_port()), "--timeout", "1")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: Airflow not healthy after 1 s")
    assert re.search(r"^--- (api-server|scheduler|dag-processor|triggerer) \(", out.stderr, re.M)  # its log tail
    assert airflow_processes(home) == []
    assert cli("airflow", "status", "--state-dir", stack["state_dir"]).returncode == 3  # nothing recorded


@pytest.fixture(scope="module")
def local_airflow(stack, loaded):
    out = cli("airflow", "up", "--state-dir", stack["state_dir"], "--port", str(free_port()), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    state = json.loads(out.stdout)
    try:
        yield state | {"api": AirflowApi(state["url"], state["login"]["user"], state["login"]["password"])}
    finally:
        cli("airflow", "down", "--state-dir", stack["state_dir"])


def test_up_reports_a_usable_airflow_with_the_stacks_connections_in_its_database(local_airflow, stack):
    api = local_airflow["api"]
    dags = {d["dag_id"]: d for d in local_airflow["dags"]}
    assert not dags["triton_load_probe"]["is_paused"]  # manual: usable at once
    assert dags["artifact_sync"]["is_paused"]  # scheduled: waits for a person
    conns = {c["connection_id"]: c for c in api.get("/connections")["connections"]}
    assert {"triton_default", "llm_gateway_default", "prometheus_default", "llm_artifacts_s3"} <= set(conns)
    assert conns["triton_default"]["port"] == stack["ports"]["triton_http"]  # this stack's, imported at up
    assert conns["llm_gateway_default"]["conn_type"] == "llm_gateway" and conns["triton_default"]["description"]
    targets = api.get("/variables/llm_release_sync_targets")
    assert json.loads(targets["value"])[0]["scheduled"] == "dry_run" and targets["description"]


def test_a_run_triggered_through_the_rest_api_loads_the_version_beside_the_serving_ones(
        local_airflow, triton, engines):
    from llm_release.model_repo import install_version

    api = local_airflow["api"]
    install_version(engines["dir"] / "engine3", triton.model_repository, model_name=MODEL, version=3)
    try:
        run_id = api.trigger("triton_load_probe", {"model": MODEL, "version": 3})
        run = api.wait("triton_load_probe", run_id)
        tasks = api.tasks("triton_load_probe", run_id)
        assert run["state"] == "success", {k: t["state"] for k, t in tasks.items()}
        assert triton.ready_versions(MODEL) == [1, 2, 3]  # 1 and 2 kept serving
        load_log = api.log("triton_load_probe", run_id, tasks["load_version"])
        assert re.search(r"reference_lm v3 is READY beside v1, v2 after [\d.]+ s", load_log), load_log
        assert "answered a real inference" in api.log("triton_load_probe", run_id, tasks["probe_version"])
    finally:
        triton.load_versions(MODEL, [1, 2])  # what the other tests expect


def test_a_run_for_a_model_that_does_not_exist_fails_at_once_with_its_message_in_the_log(local_airflow, triton):
    api = local_airflow["api"]
    before = triton.ready_versions(MODEL)
    run_id = api.trigger("triton_load_probe", {"model": "no_such_model", "version": 1})
    run = api.wait("triton_load_probe", run_id)
    tasks = api.tasks("triton_load_probe", run_id)
    assert run["state"] == "failed"
    load = tasks["load_version"]
    assert load["state"] == "failed" and load["try_number"] == 1  # not up_for_retry: no retry was scheduled
    assert tasks["probe_version"]["state"] == "upstream_failed"
    log = api.log("triton_load_probe", run_id, load)
    assert "no_such_model: no version directory for [1]" in log and "install the engine first" in log
    assert "not retried" in log
    assert triton.ready_versions(MODEL) == before


def test_the_airflow_cli_sees_the_same_airflow_and_prints_no_warning(local_airflow):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=local_airflow["home"], PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    out = subprocess.run(["airflow", "dags", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {"triton_load_probe", "artifact_sync"} <= {d["dag_id"] for d in json.loads(out.stdout)}
    assert "warning" not in out.stderr.lower(), out.stderr


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `bash scripts/bootstrap.sh --tests` (Debian's chromium)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser, local_airflow):
    """A page logged into the UI through its login form."""
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(30_000)
    page.goto(local_airflow["url"] + "/")
    page.get_by_label("Username").fill(local_airflow["login"]["user"])
    page.get_by_label("Password").fill(local_airflow["login"]["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(local_airflow["url"] + "/")
    yield page
    page.close()


def test_the_trigger_form_shows_every_param_with_its_description(page, local_airflow):
    page.goto(local_airflow["url"] + "/dags/triton_load_probe")
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    form.get_by_text("Run Parameters").wait_for()
    text = form.inner_text()
    for title, description in (("Model", "Triton model name as in the model repository"),
                               ("Version", "Version to load beside the serving ones"),
                               ("Keep serving versions", "every version READY now stays loaded")):
        assert title in text and description in text, text


def test_the_connection_form_lists_our_types_by_name_and_shows_no_error_before_typing(page, local_airflow):
    from llm_release_airflow.provider_info import CONNECTION_TYPES

    page.goto(local_airflow["url"] + "/connections")
    page.get_by_role("button", name="Add Connection").click()
    form = page.get_by_role("dialog")
    form.get_by_role("combobox").first.click()
    listed = page.get_by_role("option").all_inner_texts()
    for conn_type in CONNECTION_TYPES:
        assert conn_type["hook-name"] in listed, listed
    assert not {c["connection-type"] for c in CONNECTION_TYPES} & set(listed)  # no raw ids

    page.get_by_role("option", name="JFrog Artifactory (engines)").click()
    form.get_by_role("button", name=re.compile("^Extra Fields$")).click()
    form.get_by_text("Key of the generic repository holding the engines").wait_for()
    for field in form.locator("input").all():  # a person tabbing through without typing
        field.focus()
        field.blur()
    assert "This field is required" not in form.inner_text()
    assert form.locator("[aria-invalid=true]").count() <= 1  # at most Airflow's own Connection ID field


APPROVAL_MODEL = "approval_lm"


@pytest.fixture(scope="module")
def approval_model(stack, engines, triton, router):
    """v1 serving, v2 installed and recorded as promoted in staging (the production precondition)."""
    from llm_release.artifacts.manifest import Manifest
    from llm_release.model_repo import install_version
    from llm_release.records import ReleaseRecords
    from llm_release.routing.state import RoutingState

    repo = Path(stack["model_repository"])
    for version in (1, 2):
        install_version(engines["dir"] / "engine1", repo, model_name=APPROVAL_MODEL, version=version)
    triton.load_versions(APPROVAL_MODEL, [1])
    digest = Manifest.of_engine_dir(repo / APPROVAL_MODEL / "2").digest
    with ReleaseRecords(ReleaseRecords.sqlite_url(Path(stack["state_dir"]) / "records" / "releases.db")) as records:
        staged = records.create_release(model=APPROVAL_MODEL, version=2, environment="staging", region="local",
                                        strategy="canary", spec={}, artifact_digest=digest, requested_by="tests")
        records.finish(staged.id, state="promoted", outcome="promoted", reason="staging passed (set up by the test)")
    try:
        yield APPROVAL_MODEL
    finally:
        router.apply(RoutingState(APPROVAL_MODEL, {1: 100}))
        triton.unload_versions(APPROVAL_MODEL, triton.ready_versions(APPROVAL_MODEL) or [1])


def failed_tasks(api, dag_id: str, run_id: str, tasks: dict) -> str:
    """Every task's state, and the log tail of each that did not succeed (for a failure report)."""
    lines = [" ".join(f"{k}={t['state']}" for k, t in tasks.items())]
    for key, ti in tasks.items():
        if ti["state"] == "failed" and ti.get("try_number"):
            try:
                lines.append(f"--- {key} (failed):\n{api.log(dag_id, run_id, ti)[-1500:]}")
            except Exception as exc:  # noqa: BLE001 - a report, never a second failure
                lines.append(f"--- {key} (failed): log unreadable: {exc}")
    return "\n".join(lines)


def wait_for_scheduler_report(stack, run_id: str, task_id: str, timeout_s: float = 120.0) -> None:
    """Until the scheduler has processed the executor's report of `task_id`'s parked try."""
    log = Path(stack["state_dir"]) / "airflow" / "logs" / "scheduler.log"
    wanted = f"TaskInstance Finished: dag_id=release, task_id={task_id}, run_id={run_id},"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(wanted in line and "state=awaiting_input" in line for line in log.read_text().splitlines()):
            return
        time.sleep(0.5)
    raise AssertionError(f"the scheduler never reported {task_id}'s parked try of {run_id} in {log}")


def production_release(local_airflow, stack, router, answer=None, **conf):
    """Trigger a production release of v2 under live load; answer its approval (or not); wait for the end."""
    from llm_release.loadgen import SteadyLoad
    from llm_release.routing.state import RoutingState

    api = local_airflow["api"]
    router.apply(RoutingState(APPROVAL_MODEL, {1: 100}))
    conf = {"model": APPROVAL_MODEL, "version": 2, "environment": "production", "steps": [50, 100],
            "min_soak_s": 10, "max_soak_s": 240, **conf}
    with SteadyLoad(f"{stack['components']['envoy']['url']}/v2/models/{APPROVAL_MODEL}/generate", rate_per_s=30.0):
        run_id = api.trigger("release", conf)
        api.wait_for_task("release", run_id, "approve", ("awaiting_input", "failed", "upstream_failed"), timeout_s=300)
    request = api.approval("release", run_id, "approve")
    if answer:
        # A person answers after reading the evidence, not in the instant the task parks. Airflow
        # 3.3's LocalExecutor reports the parked try's exit seconds later on a loaded host (5.6 s
        # seen), and an answer arriving before that report lets the scheduler fail the resumed
        # task ("state changed externally"): Airflow's race (docs/airflow.md), so the test answers
        # once the scheduler has taken that report, as any person would have.
        wait_for_scheduler_report(stack, run_id, "approve")
        api.answer("release", run_id, "approve", answer)
    run = api.wait("release", run_id, timeout_s=300)
    return api, run_id, run, request


def test_a_production_release_waits_for_approval_and_is_promoted_when_approved(local_airflow, stack, router,
                                                                             approval_model):
    from llm_release.routing.state import RoutingState

    api, run_id, run, request = production_release(local_airflow, stack, router, answer="Approve")
    tasks = api.tasks("release", run_id)
    assert run["state"] == "success", failed_tasks(api, "release", run_id, tasks)
    assert "PASS" in request["body"] and "v1 100%" in request["body"]  # the evidence, and what a rejection restores
    assert request["options"] == ["Approve", "Reject"]
    assert router.get_state(APPROVAL_MODEL) == RoutingState(APPROVAL_MODEL, {2: 100})
    history = json.loads(cli("history", "--model", APPROVAL_MODEL, "--env", "production", "--json",
                             "--state-dir", stack["state_dir"]).stdout)
    assert history[0]["outcome"] == "promoted"
    approval = next(e for e in history[0]["events"] if e["kind"] == "approval")
    assert approval["actor"] == local_airflow["login"]["user"]  # who answered, from Airflow


def test_a_rejected_production_release_is_rolled_back_and_the_run_fails(local_airflow, stack, router, approval_model):
    from llm_release.routing.state import RoutingState

    # steps [100]: straight to the approval after the probe (the approved release judged a step)
    api, run_id, run, _ = production_release(local_airflow, stack, router, answer="Reject", steps=[100])
    tasks = api.tasks("release", run_id)
    assert run["state"] == "failed" and tasks["rollback"]["state"] == "failed"
    assert router.get_state(APPROVAL_MODEL) == RoutingState(APPROVAL_MODEL, {1: 100})
    assert "rejected by" in api.log("release", run_id, tasks["rollback"])


def test_an_approval_nobody_gives_in_time_rolls_back(local_airflow, stack, router, approval_model):
    from llm_release.routing.state import RoutingState

    api, run_id, run, _ = production_release(local_airflow, stack, router, answer=None, approval_timeout_s=60,
                                             steps=[100])
    assert run["state"] == "failed"
    assert router.get_state(APPROVAL_MODEL) == RoutingState(APPROVAL_MODEL, {1: 100})
    log = api.log("release", run_id, api.tasks("release", run_id)["rollback"])
    assert "approval timed out" in log, log


def test_a_release_task_started_again_mid_step_resumes_from_the_record(local_airflow, stack, router, approval_model):
    """The steps task is cleared while its step soaks (as a lost worker's retry would start it
    again): the new try finds the step in the record and keeps judging it, from its real start."""
    from llm_release.loadgen import SteadyLoad
    from llm_release.routing.state import RoutingState

    api = local_airflow["api"]
    router.apply(RoutingState(APPROVAL_MODEL, {1: 100}))
    with SteadyLoad(f"{stack['components']['envoy']['url']}/v2/models/{APPROVAL_MODEL}/generate", rate_per_s=30.0):
        run_id = api.trigger("release", {"model": APPROVAL_MODEL, "version": 2, "environment": "staging",
                                         "steps": [50, 100], "min_soak_s": 30, "max_soak_s": 240})
        api.wait_for_task("release", run_id, "steps", ("deferred",), timeout_s=180)
        first_try = api.tasks("release", run_id)["steps"]["try_number"]
        api.clear("release", run_id, ["steps"])
        run = api.wait("release", run_id, timeout_s=400)
    tasks = api.tasks("release", run_id)
    assert run["state"] == "success", {k: t["state"] for k, t in tasks.items()}
    assert tasks["steps"]["try_number"] > first_try
    history = json.loads(cli("history", "--model", APPROVAL_MODEL, "--env", "staging", "--json",
                             "--state-dir", stack["state_dir"]).stdout)
    release = history[0]
    assert release["outcome"] == "promoted"
    steps = [e for e in release["events"] if e["kind"] == "step"]
    assert len(steps) == 1  # the new try did not shift again
    shifted = next(e for e in release["events"] if e.get("to_state") == "shifted")
    verdict = next(e for e in release["events"] if e["kind"] == "verdict")["data"]["verdict"]
    from datetime import datetime

    assert abs(verdict["started"] - datetime.fromisoformat(shifted["at"]).timestamp()) < 2  # judged from the shift


def test_status_second_up_and_down(local_airflow, stack):
    status = json.loads(cli("airflow", "status", "--state-dir", stack["state_dir"], "--json").stdout)
    assert status["healthy"] and set(status["components"]) == {"api-server", "scheduler", "dag-processor", "triggerer"}
    again = cli("airflow", "up", "--state-dir", stack["state_dir"])
    assert again.returncode == 1 and "already running" in again.stderr

    down = cli("airflow", "down", "--state-dir", stack["state_dir"])
    assert down.returncode == 0 and "airflow scheduler" in down.stdout
    assert airflow_processes(Path(local_airflow["home"])) == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", local_airflow["port"])) != 0  # nothing listens any more
    assert stack["stack"].status()["healthy"]  # the stack itself is untouched
