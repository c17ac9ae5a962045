"""Emergency traffic control from the command line, without Airflow."""

from __future__ import annotations

import json
import subprocess
import sys

from llm_release.routing.state import RoutingState

MODEL = "reference_lm"


def cli(stack, *args):
    return subprocess.run([sys.executable, "-m", "llm_release.cli", "traffic", *args, "--state-dir", stack["state_dir"]],
                          capture_output=True, text=True, timeout=120)


def test_set_records_the_previous_routing_and_rollback_restores_it(stack, loaded, router, tmp_path):
    before = router.apply(RoutingState(MODEL, {1: 100}))
    record = tmp_path / "shift.json"
    out = cli(stack, "set", "--model", MODEL, "--weights", "1=50,2=50", "--header", "x-experiment",
              "--route", "B=2", "--mirror", "2=10", "--record", str(record))
    assert out.returncode == 0, out.stderr
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 50, 2: 50}, "x-experiment", {"B": 2}, 2, 10)
    status = cli(stack, "status", "--model", MODEL)
    assert json.loads(status.stdout)["weights"] == {"1": 50, "2": 50}
    back = cli(stack, "rollback", "--record", str(record))
    assert back.returncode == 0, back.stderr
    assert router.get_state(MODEL) == before


def test_emergency_rollback_to_one_version(stack, loaded, router):
    router.apply(RoutingState(MODEL, {1: 10, 2: 90}))
    out = cli(stack, "rollback", "--model", MODEL, "--to-version", "1")
    assert out.returncode == 0, out.stderr
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 100})


def test_bad_weights_on_the_command_line_name_the_field(stack, loaded, router):
    before = router.apply(RoutingState(MODEL, {1: 100}))
    out = cli(stack, "set", "--model", MODEL, "--weights", "1=90,2=9")
    assert out.returncode == 2 and out.stderr.startswith("error: weights:")
    assert router.get_state(MODEL) == before
    out = cli(stack, "switch", "--model", MODEL, "--version", "7")
    assert out.returncode == 2 and "not READY" in out.stderr
    assert router.get_state(MODEL) == before
