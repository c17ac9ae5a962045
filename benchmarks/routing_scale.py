"""A routing change on one gateway with 1, 10, 100 and 1,000 models: does it cost the same?

One stack, one gateway. A real model (`scale_lm`, versions 1 and 2 in Triton) is watched by
client threads; the other models are routing only (clusters and routes for versions 1 and 2,
never called). For each fleet size, side by side in one run:

- registration: every model is registered one after another (`apply`, as a platform team adding
  models would); the per-model time while the fleet grows to that size, and the total so far;
- router-call latency (the call, including Envoy's confirmation) of a weight change
  (`set_weights`), a switch and a rollback (re-applying the state saved before a change), each
  on a random model of the fleet;
- time until clients see a switch of the watched model: first answer from the new version,
  and the start of 50 answers in a row from it, after the router call began.

The bars (issue 11): a change at 1,000 models within 1.5x of a change at 1 (medians), and
registering a model costs the same at 1,000 as at 10 (so registering N models is linear in N).
The stack's Prometheus keeps scraping Envoy throughout, as it does in production
(`--stop-prometheus` to measure without it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from routing_latency import Observer  # noqa: E402

from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.model_repo import install_version  # noqa: E402
from llm_release.routing.state import RoutingState  # noqa: E402
from llm_release.stack.local import LocalStack, gateway_router  # noqa: E402
from llm_release.triton_control import TritonControl  # noqa: E402

MODEL = "scale_lm"
SIZES = (1, 10, 100, 1000)


def ms(values: list[float]) -> dict:
    out = sorted(v * 1000 for v in values)
    return {"median_ms": round(statistics.median(out), 2), "p95_ms": round(out[int(0.95 * (len(out) - 1))], 2),
            "max_ms": round(out[-1], 2), "runs": len(out)}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def filler(i: int) -> str:
    return f"fleet{i:04d}_lm"


def measure_changes(router, models: list[str], runs: int, rng: random.Random) -> dict:
    weight, switch, rollback = [], [], []
    for _ in range(runs):
        model = rng.choice(models)
        share = rng.randint(1, 99)
        weight.append(timed(lambda: router.set_weights(model, {1: share, 2: 100 - share})))
        saved = router.get_state(model)
        switch.append(timed(lambda: router.switch(model, rng.choice((1, 2)))))
        rollback.append(timed(lambda: router.apply(saved)))
    return {"weight_change": ms(weight), "switch": ms(switch), "rollback": ms(rollback)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="changes of each kind per fleet size")
    parser.add_argument("--visible-runs", type=int, default=6, help="watched switches per fleet size")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--stop-prometheus", action="store_true",
                        help="stop the stack's Prometheus (which scrapes Envoy's statistics every second)")
    args = parser.parse_args()
    rng = random.Random(11)
    figures: dict = {"sizes": {}}
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
            if args.stop_prometheus:
                stack.stop_component("prometheus")
            figures["prometheus_scraping_envoy"] = not args.stop_prometheus
            router = gateway_router(state)
            router.apply(RoutingState(MODEL, {1: 50, 2: 50}))
            fleet = [MODEL]
            registered_s = 0.0
            url = f"{state['components']['envoy']['url']}/v2/models/{MODEL}/generate"
            for size in sorted(args.sizes):
                row: dict = {}
                # registration, one model after another, up to this size
                added = [filler(i) for i in range(len(fleet) - 1, size - 1)]
                if added:
                    took = [timed(lambda m=m: router.apply(RoutingState(m, {1: 50, 2: 50}))) for m in added]
                    registered_s += sum(took)
                    # the last 50 registrations: what one more model costs at this size
                    row["registration_per_model"] = ms(took[-50:])
                    row["registration_total_s"] = round(registered_s, 2)
                    fleet += added
                assert len(fleet) == size, (len(fleet), size)
                row.update(measure_changes(router, fleet, args.runs, rng))
                first_s, steady_s, call_s = [], [], []
                with Observer(url, threads=2) as obs:
                    router.apply(RoutingState(MODEL, {1: 100}))
                    time.sleep(0.3)
                    for run in range(args.visible_runs):
                        new = "2" if run % 2 == 0 else "1"
                        started = time.perf_counter()
                        router.switch(MODEL, int(new))
                        call_s.append(time.perf_counter() - started)
                        first, steady = obs.effect(started, new)
                        first_s.append(first)
                        steady_s.append(steady)
                row["clients_see_switch"] = {"router_call": ms(call_s), "first_answer_from_new": ms(first_s),
                                             "50_in_a_row_from_new": ms(steady_s)}
                figures["sizes"][str(size)] = row
                print(size, row, flush=True)
        finally:
            stack.down()
    sizes = figures["sizes"]
    low, high = str(min(args.sizes)), str(max(args.sizes))
    figures["bar"] = {kind: {"ratio_largest_to_smallest": round(sizes[high][kind]["median_ms"]
                                                                / sizes[low][kind]["median_ms"], 2),
                             "within_1.5x": sizes[high][kind]["median_ms"] <= 1.5 * sizes[low][kind]["median_ms"]}
                      for kind in ("weight_change", "switch", "rollback")}
    grown = [str(n) for n in sorted(args.sizes) if "registration_per_model" in sizes[str(n)]]
    if len(grown) >= 2:
        first, last = sizes[grown[0]]["registration_per_model"], sizes[grown[-1]]["registration_per_model"]
        figures["bar"]["registration_per_model"] = {
            "sizes": [int(grown[0]), int(grown[-1])],
            "ratio_largest_to_smallest": round(last["median_ms"] / first["median_ms"], 2),
            "within_1.5x": last["median_ms"] <= 1.5 * first["median_ms"]}
    print(figures["bar"])
    # Both configurations keep their own file, to be read side by side.
    write_results("routing_scale_prometheus_stopped" if args.stop_prometheus else "routing_scale", figures)


if __name__ == "__main__":
    main()
