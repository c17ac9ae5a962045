"""The gateway's control plane (xds_server) as the router meets it: changes acknowledged by the
stack's Envoy, a change Envoy refuses undone everywhere, invalid resources refused before
anything is stored or sent, resources kept across a restart, and no Envoy reported as such."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests

from llm_release.routing.envoy import CLUSTER_TYPE, SCOPE_TYPE, cluster_resource
from llm_release.routing.state import RoutingState
from llm_release.stack.processes import free_port
from llm_release.stack.xds import REPO_ROOT, find_xds_python, xds_argv

SCOPE_PATH = "/v1/resources/envoy.config.route.v3.ScopedRouteConfiguration/"


def change(url: str, *steps: dict, timeout_s: float = 10.0) -> requests.Response:
    return requests.post(f"{url}/v1/changes", json={"steps": list(steps), "timeout_s": timeout_s}, timeout=30)


def scope(name: str, model: str, regex: str = "^/v2/models/[^/]+/generate$") -> dict:
    return {"name": name, "key": {"fragments": [{"string_key": "models"}, {"string_key": model}]},
            "route_configuration": {"name": name, "virtual_hosts": [{"name": "main", "domains": ["*"], "routes": [
                {"name": "only", "match": {"safe_regex": {"regex": regex}},
                 "direct_response": {"status": 200, "body": {"inline_string": name}}}]}]}}


@pytest.fixture()
def control_plane(stack):
    return stack["components"]["xds"]["url"]


def test_a_change_is_answered_once_envoy_has_acknowledged_it(stack, urls, control_plane):
    resp = change(control_plane, {"type_url": SCOPE_TYPE, "upserts": {"models/cp_probe": scope("models/cp_probe", "cp_probe")}})
    assert resp.status_code == 200, resp.text
    (step,) = resp.json()["steps"]
    assert step["envoys"] == 1 and step["changed"] == ["models/cp_probe"]
    # acknowledged means served, at once
    assert requests.get(f"{urls['gateway']}/v2/models/cp_probe/generate", timeout=5).text == "models/cp_probe"
    # the same resource again changes nothing and is not sent again
    again = change(control_plane, {"type_url": SCOPE_TYPE, "upserts": {"models/cp_probe": scope("models/cp_probe", "cp_probe")}})
    assert again.status_code == 200 and again.json()["steps"][0]["changed"] == []
    change(control_plane, {"type_url": SCOPE_TYPE, "removals": ["models/cp_probe"]})
    assert requests.get(f"{urls['gateway']}/v2/models/cp_probe/generate", timeout=5).status_code == 404


def test_a_change_envoy_refuses_is_undone_and_says_why(stack, urls, control_plane, router):
    router.apply(RoutingState("cp_refused", {1: 100}))  # a real model's scope and clusters, to be kept
    before = requests.get(f"{control_plane}{SCOPE_PATH}models%2Fcp_refused", timeout=5).json()
    good_cluster = cluster_resource("cp_refused_extra", ("127.0.0.1", 9))
    bad = scope("models/cp_refused", "cp_refused", regex="^/v2/models/(unclosed$")  # RE2 refuses it
    resp = change(control_plane, {"type_url": CLUSTER_TYPE, "upserts": {"cp_refused_extra": good_cluster}},
                  {"type_url": SCOPE_TYPE, "upserts": {"models/cp_refused": bad}})
    assert resp.status_code == 409, resp.text
    assert "refused" in resp.json()["error"] and resp.json()["step"] == 1 and resp.json()["stored"] is False
    # undone in the store and on Envoy: the cluster of step 0 is gone again, the scope is the old one
    after = requests.get(f"{control_plane}{SCOPE_PATH}models%2Fcp_refused", timeout=5).json()
    assert after["version"] == before["version"]
    assert requests.get(f"{control_plane}/v1/resources/envoy.config.cluster.v3.Cluster/cp_refused_extra",
                        timeout=5).status_code == 404
    assert router.get_state("cp_refused") == RoutingState("cp_refused", {1: 100})
    clusters = requests.get(f"{urls['envoy_admin']}/clusters", timeout=5).text
    assert "cp_refused_extra::" not in clusters and "cp_refused_v1::" in clusters


@pytest.mark.parametrize("steps, words", [
    ([{"type_url": "type.googleapis.com/envoy.config.route.v3.Nope", "upserts": {"x": {}}}], "not one this control plane"),
    ([{"type_url": SCOPE_TYPE, "upserts": {"x": {"name": "x", "no_such_field": 1}}}], "no_such_field"),
    ([{"type_url": SCOPE_TYPE, "upserts": {"x": {"name": "y"}}}], "names itself 'y'"),
    ([{"type_url": "clusters", "upserts": {}}], "type.googleapis.com/"),
    ([], "steps"),
])
def test_an_invalid_resource_is_refused_before_anything_is_stored(control_plane, steps, words):
    types = requests.get(f"{control_plane}/v1/status", timeout=5).json()["types"]
    resp = requests.post(f"{control_plane}/v1/changes", json={"steps": steps}, timeout=10)
    assert resp.status_code == 400 and words in resp.json()["error"], resp.text
    assert requests.get(f"{control_plane}/v1/status", timeout=5).json()["types"] == types


def test_without_envoy_a_change_is_kept_unconfirmed_and_a_restart_keeps_every_resource(tmp_path):
    grpc_port, http_port = free_port(), free_port()
    argv = xds_argv(find_xds_python(), tmp_path / "store", grpc_port=grpc_port, http_port=http_port)
    url = f"http://127.0.0.1:{http_port}"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return proc
            except requests.RequestException:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError("the control plane did not start")

    proc = start()
    try:
        resp = change(url, {"type_url": SCOPE_TYPE, "upserts": {"models/alone": scope("models/alone", "alone")}})
        assert resp.status_code == 503 and resp.json()["stored"] is True and "no Envoy" in resp.json()["error"]
        stored = requests.get(f"{url}{SCOPE_PATH}models%2Falone", timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    proc = start()
    try:
        assert requests.get(f"{url}{SCOPE_PATH}models%2Falone", timeout=5).json() == stored
        assert requests.get(f"{url}/v1/status", timeout=5).json()["envoys"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
