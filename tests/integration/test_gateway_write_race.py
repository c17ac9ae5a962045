"""Several processes change one Envoy at the same time: none loses another's update.

Each writer is a separate Python process (as two Airflow workers, or the CLI beside a DAG, would
be) applying 15 changes to its own model on the live stack's Envoy; two more take turns on one
shared model. Afterwards every model's routing, read back from Envoy, is its writer's last
state, and routing-state.json is whole and agrees with Envoy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_release.errors import RoutingError
from llm_release.fsutil import exclusive_lock
from llm_release.routing.envoy import EnvoyRouter
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
router = EnvoyRouter(args["xds_dir"], args["admin_url"], tuple(args["upstream"]),
                     shadow_listener=tuple(args["shadow_listener"]), lock_timeout_s=args["lock_timeout_s"])
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
    return {"xds_dir": str(envoy["xds_dir"]), "admin_url": envoy["admin_url"],
            "upstream": ["127.0.0.1", stack["ports"]["triton_http"]],
            "shadow_listener": ["127.0.0.1", stack["ports"]["envoy_shadow"]],
            # Headroom for a loaded test machine: 90 changes serialised behind one lock.
            "lock_timeout_s": 120}


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

    doc = json.loads((Path(stack["components"]["envoy"]["xds_dir"]) / "routing-state.json").read_text())
    for model in OWN_MODELS + [SHARED]:
        entry = doc["models"][model]
        assert RoutingState.from_dict(entry["state"]) == router.get_state(model)
        assert entry["versions"] == [1, 2, 3]
    assert (Path(stack["components"]["envoy"]["xds_dir"]) / "routing.lock").exists()


def test_a_writer_that_cannot_get_the_lock_in_time_fails_naming_it(stack, router):
    router.apply(RoutingState(OWN_MODELS[0], {1: 100}))
    args = router_args(stack)
    impatient = EnvoyRouter(Path(args["xds_dir"]), args["admin_url"], tuple(args["upstream"]),
                            shadow_listener=tuple(args["shadow_listener"]), lock_timeout_s=0.5)

    with exclusive_lock(impatient.lock_file, timeout_s=5):  # another writer in the middle of a change
        with pytest.raises(RoutingError, match="routing lock .*routing.lock.* for more than 0.5 s"):
            impatient.apply(RoutingState(OWN_MODELS[0], {2: 100}))
        with pytest.raises(RoutingError, match="routing.lock"):
            impatient.forget(OWN_MODELS[0], 3)
    assert router.get_state(OWN_MODELS[0]) == RoutingState(OWN_MODELS[0], {1: 100})
    assert impatient.apply(RoutingState(OWN_MODELS[0], {2: 100})) == RoutingState(OWN_MODELS[0], {2: 100})
