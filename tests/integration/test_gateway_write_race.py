"""Several processes change one Envoy at the same time: none loses another's update.

Each writer is a separate Python process (as two Airflow workers, or the CLI beside a DAG, would
be) applying 15 changes to its own model on the live stack's Envoy; two more take turns on one
shared model. Afterwards every model's routing, read back from Envoy, is its writer's last
state, and the control plane's record of it is whole and agrees with Envoy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from llm_release.routing.envoy import SCOPE_TYPE, model_scopes
from llm_release.routing.state import RoutingState

REPO_ROOT = Path(__file__).resolve().parents[2]
CHANGES = 15
OWN_MODELS = [f"race_m{i}" for i in range(4)]
SHARED = "race_shared"

WRITER = r"""
import json, sys, time
from llm_release.routing.envoy import EnvoyRouter
from llm_release.routing.state import RoutingState

args = json.loads(sys.argv[1])
router = EnvoyRouter(args["control_plane_url"], args["admin_url"], tuple(args["upstream"]),
                     shadow_listener=tuple(args["shadow_listener"]), attempts=args["attempts"])
print("ready", flush=True)
sys.stdin.readline()  # every writer starts at once
outcome = {"applied": 0, "error": None}
try:
    for doc in args["changes"]:
        state = RoutingState.from_dict(doc)
        if router.apply(state) != state:
            raise AssertionError(f"apply returned another state than {doc}")
        outcome["applied"] += 1
except Exception as exc:
    outcome["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(outcome), flush=True)
"""


def changes(model: str, ks: list[int]) -> list[RoutingState]:
    """Distinct states, every other one with a header route (so whole entries change, not just weights)."""
    out = []
    for i, k in enumerate(ks):
        routes = {"B": 3} if i % 2 else {}
        out.append(RoutingState(model, {1: k, 2: 100 - k}, header="x-experiment" if routes else None,
                                header_routes=routes))
    return out


def router_args(stack) -> dict:
    envoy = stack["components"]["envoy"]
    return {"control_plane_url": envoy["control_plane_url"], "admin_url": envoy["admin_url"],
            "upstream": ["127.0.0.1", stack["ports"]["triton_http"]],
            "shadow_listener": ["127.0.0.1", stack["ports"]["envoy_shadow"]],
            # Headroom for the two writers of one model: each may lose the race many times in a row.
            "attempts": 200}


def run_writers(stack, plans: dict[str, list[RoutingState]]) -> dict[str, dict]:
    """Start one process per plan, let them all go at once, return each one's outcome."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    procs = {}
    try:
        for who, states in plans.items():
            args = dict(router_args(stack), changes=[s.to_dict() for s in states])
            procs[who] = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(args)], cwd=REPO_ROOT, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for who, proc in procs.items():
            assert proc.stdout.readline().strip() == "ready", f"writer {who} did not start"
        for proc in procs.values():
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = {}
        for who, proc in procs.items():
            out, _ = proc.communicate(timeout=300)
            outcomes[who] = json.loads(out.strip().splitlines()[-1])
        return outcomes
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_concurrent_writers_lose_no_update(stack, router):
    plans = {model: changes(model, list(range(1 + i, 1 + i + CHANGES))) for i, model in enumerate(OWN_MODELS)}
    plans["shared_odd"] = changes(SHARED, [2 * i + 1 for i in range(CHANGES)])
    plans["shared_even"] = changes(SHARED, [2 * i + 2 for i in range(CHANGES)])

    outcomes = run_writers(stack, plans)

    assert {who: o["error"] for who, o in outcomes.items()} == {who: None for who in plans}
    assert all(o["applied"] == CHANGES for o in outcomes.values())
    for model in OWN_MODELS:
        assert router.get_state(model) == plans[model][-1], f"{model} lost its writer's last update"
    # The pair on one model: the writer that applied last wins, with the whole of its state.
    assert router.get_state(SHARED) in (plans["shared_odd"][-1], plans["shared_even"][-1])

    for model in OWN_MODELS + [SHARED]:
        record, _ = router._record(model)  # what the control plane keeps: whole, and what Envoy serves
        assert RoutingState.from_dict(record["state"]) == router.get_state(model)
        assert record["versions"] == [1, 2, 3]


def test_a_change_computed_from_a_stale_read_is_refused_and_changes_nothing(stack, router):
    """The control plane's guard for writers of one model: a change names the version it was
    computed from, and a model changed in between refuses it (the router then reads again)."""
    model = OWN_MODELS[0]
    router.apply(RoutingState(model, {1: 100}))
    record, read_at = router._record(model)
    router.apply(RoutingState(model, {2: 100}))  # another writer, in between
    stale = dict(record, state=RoutingState(model, {3: 100}).to_dict())
    (scope, *_) = model_scopes(model, stale)
    resp = requests.post(f"{stack['components']['xds']['url']}/v1/changes", timeout=30, json={"steps": [
        {"type_url": SCOPE_TYPE, "upserts": {scope["name"]: scope}, "expect": {scope["name"]: read_at}}]})
    assert resp.status_code == 412 and "another writer" in resp.json()["error"]
    assert router.get_state(model) == RoutingState(model, {2: 100})
    assert router._record(model)[0]["state"] == RoutingState(model, {2: 100}).to_dict()
