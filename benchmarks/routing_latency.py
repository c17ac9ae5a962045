"""How fast routing changes take effect on Envoy, as clients see it.

1. weight change: from calling the router (0/100 -> 100/0) until requests are answered by the
   new version (first one, and the start of 50 in a row);
2. rollback: from a 50/50 split with a "bad" canary, restoring 100% stable, until 50 answers in a
   row come from the stable version.
The router call itself returns only after Envoy's admin API shows the new routes (read-back).
Requests are sent by 4 client threads all the time; figures are medians and maxima over runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.model_repo import install_version  # noqa: E402
from llm_release.routing.state import RoutingState  # noqa: E402
from llm_release.stack.local import LocalStack, gateway_router  # noqa: E402
from llm_release.triton_control import TritonControl  # noqa: E402

MODEL = "route_lm"
STREAK = 50


class Observer:
    """Client threads recording (time, version) of every answer."""

    def __init__(self, url: str, threads: int = 4):
        self.url = url
        self.answers: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        session = requests.Session()
        while not self.stop.is_set():
            resp = session.post(self.url, json={"text_input": "x", "max_tokens": 1}, timeout=30)
            if resp.ok:
                with self.lock:
                    self.answers.append((time.perf_counter(), resp.json()["model_version"]))

    def __enter__(self):
        for w in self.workers:
            w.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for w in self.workers:
            w.join()

    def effect(self, since: float, version: str, timeout_s: float = 10.0) -> tuple[float, float]:
        """(first answer from `version`, start of STREAK answers in a row from it), seconds after `since`."""
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            with self.lock:
                after = sorted(a for a in self.answers if a[0] >= since)
            first = next((t for t, v in after if v == version), None)
            run, start = 0, None
            for t, v in after:
                if v == version:
                    run, start = run + 1, start if run else t
                    if run >= STREAK:
                        return first - since, start - since
                else:
                    run, start = 0, None
            time.sleep(0.01)
        raise RuntimeError(f"version {version} did not take over within {timeout_s} s")


def summary(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    return {"median_ms": round(statistics.median(ms), 1), "max_ms": round(ms[-1], 1), "runs": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    apply_s, first_s, steady_s, rollback_apply_s, rollback_steady_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack")
        state = stack.up()
        try:
            for version in (1, 2):
                ckpt = make_reference_checkpoint(work / f"ckpt{version}", seed=version)
                build_engine(ckpt, work / f"e{version}", {"precision": "fp32", "max_batch_size": 8,
                                                          "max_input_len": 32, "max_seq_len": 64},
                             model_name=MODEL, version=version)
                install_version(work / f"e{version}", state["model_repository"])
            TritonControl(state["components"]["triton"]["url"], model_repository=state["model_repository"]) \
                .load_versions(MODEL, [1, 2])
            router = gateway_router(state)
            router.apply(RoutingState(MODEL, {1: 100}))
            url = f"{state['components']['envoy']['url']}/v2/models/{MODEL}/generate"
            with Observer(url) as obs:
                time.sleep(0.5)
                for run in range(args.runs):
                    old, new = ("1", "2") if run % 2 == 0 else ("2", "1")
                    started = time.perf_counter()
                    router.apply(RoutingState(MODEL, {int(new): 100}))
                    apply_s.append(time.perf_counter() - started)
                    first, steady = obs.effect(started, new)
                    first_s.append(first)
                    steady_s.append(steady)
                router.apply(RoutingState(MODEL, {1: 50, 2: 50}))
                for _ in range(args.runs):
                    router.apply(RoutingState(MODEL, {1: 50, 2: 50}))
                    time.sleep(0.3)
                    started = time.perf_counter()
                    router.apply(RoutingState(MODEL, {1: 100}))
                    rollback_apply_s.append(time.perf_counter() - started)
                    rollback_steady_s.append(obs.effect(started, "1")[1])
        finally:
            stack.down()
    figures = {
        "weight_change": {"router_call": summary(apply_s), "first_answer_from_new": summary(first_s),
                          f"{STREAK}_in_a_row_from_new": summary(steady_s)},
        "rollback_to_100_stable": {"router_call": summary(rollback_apply_s),
                                   f"{STREAK}_in_a_row_from_stable": summary(rollback_steady_s)},
    }
    print(figures)
    write_results("routing_latency", figures)


if __name__ == "__main__":
    main()
