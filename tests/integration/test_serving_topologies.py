"""The same release, routing and readiness interface over the two other serving topologies:
a model name per release (TensorRT-LLM) and one Triton deployment per version."""

from __future__ import annotations

import re
import time

import pytest
import requests

from llm_release.errors import SpecError
from llm_release.loadgen import send_generate_requests
from llm_release.model_repo import install_version
from llm_release.routing.envoy import EnvoyRouter
from llm_release.routing.shift import shift_traffic
from llm_release.routing.state import RoutingState
from llm_release.serving import DeploymentPerVersion, ModelPerRelease
from llm_release.stack.local import LocalStack
from llm_release.triton_control import TritonControl


def success_count(metrics_url: str, model: str) -> float:
    text = requests.get(metrics_url, timeout=10).text
    return sum(float(n) for n in re.findall(rf'^nv_inference_request_success\{{model="{model}",version="\d+"\}} (\S+)$',
                                             text, re.M))


def envoy_router(stack, topology, backends=None):
    envoy = stack["components"]["envoy"]
    return EnvoyRouter(envoy["control_plane_url"], envoy["admin_url"], ("127.0.0.1", stack["ports"]["triton_http"]),
                       topology=topology, backends=backends,
                       shadow_listener=("127.0.0.1", stack["ports"]["envoy_shadow"]))


def test_a_model_name_per_release(stack, engines, triton, urls):
    repo = stack["model_repository"]
    install_version(engines["dir"] / "engine1", repo, model_name="rel_lm_r7", version=1)
    install_version(engines["dir"] / "engine2", repo, model_name="rel_lm_r8", version=1)
    served = ModelPerRelease(triton)
    assert served.load("rel_lm", 7) == [7]
    assert served.load("rel_lm", 8) == [7, 8]
    assert served.probe("rel_lm", 8).version == 8

    router = envoy_router(stack, "model_per_release")
    shift_traffic(router, RoutingState("rel_lm", {7: 100}, header="x-experiment", header_routes={"B": 8}),
                  triton=served)
    url = f"{urls['gateway']}/v2/models/rel_lm/generate"
    plain = send_generate_requests(url, count=40, concurrency=4)
    b = send_generate_requests(url, count=40, concurrency=4, headers={"x-experiment": "B"})
    assert plain.errors == 0 and b.errors == 0
    names = {requests.post(url, json={"text_input": "x", "max_tokens": 1}, headers=h, timeout=30).json()["model_name"]
             for h in ({}, {"x-experiment": "B"})}
    assert names == {"rel_lm_r7", "rel_lm_r8"}
    pinned = requests.post(f"{urls['gateway']}/v2/models/rel_lm/versions/8/generate",
                           json={"text_input": "x", "max_tokens": 1}, timeout=30).json()
    assert pinned["model_name"] == "rel_lm_r8"

    shift_traffic(router, RoutingState("rel_lm", {7: 100}, mirror_version=8, mirror_percent=100), triton=served)
    before = success_count(stack["components"]["triton"]["metrics_url"], "rel_lm_r8")  # after the probes
    shadowed = send_generate_requests(url, count=30, concurrency=3)
    assert shadowed.errors == 0

    deadline = time.monotonic() + 10
    while success_count(stack["components"]["triton"]["metrics_url"], "rel_lm_r8") - before < 30 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert success_count(stack["components"]["triton"]["metrics_url"], "rel_lm_r8") - before == 30
    assert served.unload("rel_lm", 7) == [8]
    with pytest.raises(SpecError) as err:  # 7 no longer serves: it cannot get traffic back unnoticed
        shift_traffic(router, RoutingState("rel_lm", {7: 100}), triton=served)
    assert "[7] are not READY" in str(err.value)
    shift_traffic(router, RoutingState("rel_lm", {8: 100}), triton=served)
    served.unload("rel_lm", 8)


def test_one_deployment_per_version(stack, engines, triton, urls, tmp_path):
    second = LocalStack(tmp_path / "second-deployment")
    other = second.up()
    try:
        install_version(engines["dir"] / "engine1", stack["model_repository"], model_name="dep_lm", version=1)
        install_version(engines["dir"] / "engine2", other["model_repository"], model_name="dep_lm", version=2)
        triton_b = TritonControl(other["components"]["triton"]["url"], model_repository=other["model_repository"])
        served = DeploymentPerVersion({1: triton, 2: triton_b})
        served.load("dep_lm", 1)
        assert served.load("dep_lm", 2) == [1, 2]
        router = envoy_router(stack, "deployment_per_version",
                              backends={1: ("127.0.0.1", stack["ports"]["triton_http"]),
                                        2: ("127.0.0.1", other["ports"]["triton_http"])})
        shift_traffic(router, RoutingState("dep_lm", {1: 50, 2: 50}), triton=served)
        url = f"{urls['gateway']}/v2/models/dep_lm/generate"
        split = send_generate_requests(url, count=200, concurrency=4)
        assert split.errors == 0 and set(split.by_version) == {"1", "2"}
        shift_traffic(router, RoutingState("dep_lm", {2: 100}), triton=served)
        switched = send_generate_requests(url, count=50, concurrency=4)
        assert dict(switched.by_version) == {"2": 50}
        served.unload("dep_lm", 1)
    finally:
        second.down()


def test_triton_load_operator_loads_a_release_model_beside_the_serving_one(airflow_env, stack, engines, triton):
    from tests.airflow.harness import run_operator

    repo = stack["model_repository"]
    install_version(engines["dir"] / "engine1", repo, model_name="op_rel_r1", version=1)
    install_version(engines["dir"] / "engine2", repo, model_name="op_rel_r2", version=1)
    ModelPerRelease(triton).load("op_rel", 1)
    out = run_operator(airflow_env, "llm_release_airflow.operators.triton_load.TritonLoadOperator",
                       model="op_rel", version=2, topology="model_per_release")
    assert out.get("result"), out
    assert out["result"]["ready_versions"] == [1, 2] and out["result"]["previously_ready"] == [1]
    assert out["result"]["probe"]["version"] == 2
    ModelPerRelease(triton).unload("op_rel", 1)
    ModelPerRelease(triton).unload("op_rel", 2)
