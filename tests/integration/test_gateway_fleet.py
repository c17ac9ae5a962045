"""Several models on one gateway: one model's routing changes 100 times while clients keep
calling five others (none fails, each change is in effect), and a gateway or control plane
killed and restarted by the stack comes back with every model's routing."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from llm_release.errors import RoutingError
from llm_release.loadgen import send_generate_requests
from llm_release.model_repo import install_version
from llm_release.routing.state import RoutingState
from llm_release.stats import binomial_interval

CHANGED = "fleet_changed"
OTHERS = [f"fleet_other{i}" for i in range(5)]


@pytest.fixture(scope="module")
def fleet(stack, engines, triton):
    """The changed model with versions 1 and 2, five others with version 1 (the reference engines)."""
    models = {CHANGED: [1, 2], **{m: [1] for m in OTHERS}}
    for model, versions in models.items():
        for version in versions:
            install_version(engines["dir"] / f"engine{version}", stack["model_repository"], model_name=model,
                            version=version)
        triton.load_versions(model, versions)
    try:
        yield models
    finally:
        for model, versions in models.items():
            triton.unload_versions(model, versions)


def generate(url: str, model: str, **kwargs) -> requests.Response:
    return requests.post(f"{url}/v2/models/{model}/generate", json={"text_input": "fleet", "max_tokens": 1},
                         timeout=30, **kwargs)


def weights(i: int) -> dict[int, int]:
    """Change i: whole moves (0/100, 100/0) between partial splits, every one different from the last."""
    if i % 3 == 0:
        return {1: 100, 2: 0} if i % 2 else {1: 0, 2: 100}
    share = (i * 7) % 99 + 1
    return {1: share, 2: 100 - share}


def test_a_hundred_changes_to_one_model_fail_no_request_to_five_others(urls, router, fleet):
    for model in [*OTHERS, CHANGED]:
        router.apply(RoutingState(model, {1: 100}))
    stop = threading.Event()
    outcomes: dict[str, list] = {m: [] for m in OTHERS}

    def client(model: str):
        session = requests.Session()
        while not stop.is_set():
            try:
                resp = session.post(f"{urls['gateway']}/v2/models/{model}/generate",
                                    json={"text_input": "steady", "max_tokens": 1}, timeout=30)
                outcomes[model].append(resp.status_code if not resp.ok else resp.json().get("model_version"))
            except requests.RequestException as exc:
                outcomes[model].append(type(exc).__name__)

    workers = [threading.Thread(target=client, args=(m,)) for m in OTHERS]
    for w in workers:
        w.start()
    try:
        for i in range(100):
            state = RoutingState(CHANGED, weights(i))
            assert router.apply(state) == state
            assert router.get_state(CHANGED) == state, f"change {i}: Envoy does not serve {state.describe()}"
            if len(state.weights) == 1:  # a whole move: every request goes to that version at once
                (only,) = state.weights
                for _ in range(2):
                    assert generate(urls["gateway"], CHANGED).json()["model_version"] == str(only)
    finally:
        stop.set()
        for w in workers:
            w.join()
    for model in OTHERS:
        assert outcomes[model], f"no request to {model} completed"
        assert set(outcomes[model]) == {"1"}, f"{model}: {sorted(set(map(str, outcomes[model])))}"
        assert router.get_state(model) == RoutingState(model, {1: 100})
    # The last change is a partial split: the share holds.
    router.apply(RoutingState(CHANGED, {1: 70, 2: 30}))
    n = 400
    split = send_generate_requests(f"{urls['gateway']}/v2/models/{CHANGED}/generate", count=n, concurrency=4,
                                   max_tokens=1)
    assert split.errors == 0
    lo, hi = binomial_interval(n, 0.30, 0.999)
    assert lo <= split.by_version["2"] <= hi, f"v2 got {split.by_version['2']} of {n}, interval [{lo}, {hi}]"


@pytest.mark.parametrize("component", ["envoy", "xds"])
def test_a_killed_and_restarted_gateway_comes_back_with_every_models_routing(stack, urls, router, fleet, component):
    """Envoy killed: it starts empty and gets every model back from the control plane. The control
    plane killed: Envoy keeps serving what it has meanwhile, reconnects, and nothing changes."""
    expected = {m: router.apply(RoutingState(m, {1: 100})) for m in OTHERS}
    expected[CHANGED] = router.apply(RoutingState(CHANGED, {2: 100}, header="x-experiment", header_routes={"A": 1}))
    assert generate(urls["gateway"], CHANGED, headers={"x-experiment": "A"}).json()["model_version"] == "1"

    stack["stack"].restart_component(component, kill=True)

    deadline = time.monotonic() + 30
    while any(router.get_state(m) != s for m, s in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for model, state in expected.items():
        assert router.get_state(model) == state, f"{model} did not come back"
    for _ in range(5):
        assert generate(urls["gateway"], CHANGED).json()["model_version"] == "2"
        assert generate(urls["gateway"], CHANGED, headers={"x-experiment": "A"}).json()["model_version"] == "1"
    for model in OTHERS:
        assert generate(urls["gateway"], model).json()["model_version"] == "1"
    # and it takes changes again, once the restarted side is connected
    deadline = time.monotonic() + 30
    while True:
        try:
            assert router.apply(RoutingState(CHANGED, {1: 100})) == RoutingState(CHANGED, {1: 100})
            break
        except RoutingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert generate(urls["gateway"], CHANGED).json()["model_version"] == "1"
