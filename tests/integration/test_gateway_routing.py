"""Real Triton behind real Envoy: requests reach the version they should, splits hold."""

from __future__ import annotations

import json

import pytest
import requests

from llm_release.errors import SpecError
from llm_release.loadgen import send_generate_requests
from llm_release.stats import binomial_interval

MODEL = "reference_lm"


def generate(url: str, version: int | None = None, text: str = "Release notes:", max_tokens: int = 12, **extra):
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/generate"
    resp = requests.post(url + path, json={"text_input": text, "max_tokens": max_tokens, **extra}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_pinned_version_through_gateway_reaches_that_version(urls, loaded, router):
    router.set_weights(MODEL, {1: 100})
    direct = {v: generate(urls["triton"], v)["text_output"] for v in (1, 2)}
    assert direct[1] != direct[2], "two engines from two checkpoints should not say the same thing"
    for version in (1, 2):
        answer = generate(urls["gateway"], version)
        assert answer["model_version"] == str(version)
        assert answer["text_output"] == direct[version]


def test_whole_weight_moves_unpinned_traffic(urls, loaded, router):
    for target in (1, 2):
        other = 3 - target
        assert router.set_weights(MODEL, {target: 100, other: 0}).weights == {target: 100}
        result = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=60, concurrency=4)
        assert result.errors == 0
        assert dict(result.by_version) == {str(target): 60}


def test_ninety_ten_split_is_inside_the_99_percent_binomial_interval(urls, loaded, router):
    assert router.set_weights(MODEL, {1: 90, 2: 10}).weights == {1: 90, 2: 10}
    n = 2000
    result = send_generate_requests(f"{urls['gateway']}/v2/models/{MODEL}/generate", count=n, concurrency=6,
                                    max_tokens=2)
    assert result.errors == 0, result.status_codes
    lo, hi = binomial_interval(n, 0.10, 0.99)
    canary = result.by_version["2"]
    assert result.by_version["1"] + canary == n
    assert lo <= canary <= hi, f"v2 got {canary} of {n}, 99% interval is [{lo}, {hi}]"


@pytest.mark.parametrize("weights, field", [
    ({1: 90, 2: 9}, "weights"),
    ({1: 110, 2: -10}, "weights[1]"),
    ({1: 50.0, 2: 50}, "weights[1]"),
    ({0: 100}, "weights"),
])
def test_bad_weights_are_refused_and_routing_is_untouched(router, loaded, weights, field):
    router.set_weights(MODEL, {1: 80, 2: 20})
    with pytest.raises(SpecError) as err:
        router.set_weights(MODEL, weights)
    assert err.value.field == field
    assert router.get_state(MODEL).weights == {1: 80, 2: 20}


def test_streaming_through_gateway_sends_tokens_as_they_come(urls, loaded):
    full = generate(urls["gateway"], 1, text="Streaming check:", max_tokens=10)["text_output"]
    resp = requests.post(f"{urls['gateway']}/v2/models/{MODEL}/versions/1/generate_stream",
                         json={"text_input": "Streaming check:", "max_tokens": 10, "stream": True},
                         stream=True, timeout=30)
    assert resp.status_code == 200
    pieces = [json.loads(line[len(b"data: "):])["text_output"]
              for line in resp.iter_lines() if line.startswith(b"data: ")]
    assert len(pieces) >= 2, "a streamed answer arrives as several events"
    assert "".join(pieces) == full


def test_repository_api_is_not_exposed_on_the_gateway(urls):
    resp = requests.post(f"{urls['gateway']}/v2/repository/index", json={}, timeout=10)
    assert resp.status_code == 403


def test_a_change_another_envoy_acknowledged_is_not_taken_for_what_this_gateway_serves(stack, urls, router, tmp_path):
    """The router is given this gateway's admin API but a control plane feeding another Envoy (a
    mixed-up connection): the change is acknowledged over there, and the read-back of what THIS
    gateway serves refuses to call it done; this gateway's routing is untouched."""
    import subprocess
    import time

    from llm_release.errors import RoutingError
    from llm_release.routing.envoy import EnvoyRouter
    from llm_release.routing.state import RoutingState
    from llm_release.stack import envoy, xds
    from llm_release.stack.processes import free_port

    model = "mixed_up_lm"
    router.apply(RoutingState(model, {1: 100}))  # what this gateway serves
    grpc_port, http_port, listen, admin, shadow = (free_port() for _ in range(5))
    plane = subprocess.Popen(xds.xds_argv(xds.find_xds_python(), tmp_path / "store", grpc_port=grpc_port,
                                          http_port=http_port), cwd=xds.REPO_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    boot = envoy.write_bootstrap(tmp_path, listen_port=listen, admin_port=admin, shadow_port=shadow,
                                 control_plane=("127.0.0.1", grpc_port))
    other = subprocess.Popen(envoy.envoy_argv(envoy.find_envoy(), boot, base_id=admin, log_path=tmp_path / "access.log"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the second Envoy did not become ready"
            time.sleep(0.1)
        mixed = EnvoyRouter(f"http://127.0.0.1:{http_port}", urls["envoy_admin"], router.upstream, timeout_s=2.0,
                            shadow_listener=router.shadow_listener)
        with pytest.raises(RoutingError, match="Envoy serves .*expected"):
            mixed.apply(RoutingState(model, {2: 100}))
        assert router.get_state(model) == RoutingState(model, {1: 100})
        # the other Envoy did take it: the acknowledgement was real, just not this gateway's
        other_router = EnvoyRouter(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{admin}", router.upstream)
        assert other_router.get_state(model) == RoutingState(model, {2: 100})
    finally:
        for proc in (other, plane):
            proc.terminate()
            proc.wait(timeout=10)
