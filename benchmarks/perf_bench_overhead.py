"""The perf bench's own cost, beside a plain tritonclient loop sending the same requests.

The bench shares the machine with the server it measures (2 cores here), so every CPU second
it spends on itself is taken from the engine and shows up as latency. This measures, for the
same requests over the same gRPC streams in one run, turn by turn (plain, bench, bench, plain
per round, so drift hits both):

- client CPU seconds per request (time.process_time of this process: every thread, the gRPC
  stream threads included; the server is another process), and what the bench adds to the
  plain loop;
- requests/s and output tokens/s reached, on two workloads: the default mix of prompt and
  output lengths at concurrency 1 and 4, and tiny requests (8-token prompt, 1 output token) at
  concurrency 4 to find the highest request rate each client sustains here; and the rate at
  which the client alone would fill one core (1 / CPU seconds per request).

The plain loop is what a person would write with tritonclient: one stream per thread, send,
wait for the final response, count tokens; no timestamps kept, no statistics.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.model_repo import install_version  # noqa: E402
from llm_release.perf.bench import DEFAULT_MIX, BenchTarget, RequestPlan, measure_level, parse_mix  # noqa: E402
from llm_release.stack.local import LocalStack  # noqa: E402
from llm_release.triton_control import TritonControl  # noqa: E402

MODEL = "perf_lm"
PARAMS = {"precision": "fp32", "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}


def plain_loop(grpc_url: str, concurrency: int, plan, requests: int) -> dict:
    """The same requests through bare tritonclient streams: wall time and tokens only."""
    import tritonclient.grpc as g

    counter = iter(range(10 ** 12))
    lock = threading.Lock()
    tokens = [0]
    errors = [0]
    clients = []
    cpu0, wall0 = time.process_time(), time.perf_counter()  # like the bench: streams and warm-up included
    for _ in range(concurrency):
        client = g.InferenceServerClient(grpc_url)
        inbox: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error, q=inbox: q.put((result, error)))
        client.async_stream_infer(MODEL, _inputs(g, "Warm up the stream.", 2), model_version="1",
                                  enable_empty_final_response=True)
        _drain(inbox)
        clients.append((client, inbox))

    def run(client, inbox):
        while True:
            with lock:
                i = next(counter)
            if i >= requests:
                return
            req = plan(i)
            client.async_stream_infer(MODEL, _inputs(g, req.prompt, req.max_tokens), model_version="1",
                                      request_id=str(i), enable_empty_final_response=True)
            n, failed = _drain(inbox)
            with lock:
                tokens[0] += n
                errors[0] += failed

    threads = [threading.Thread(target=run, args=c) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for client, _ in clients:
        client.stop_stream()
        client.close()
    return {"wall_s": wall, "cpu_s": cpu, "requests": requests, "errors": errors[0], "tokens": tokens[0]}


def _inputs(g, prompt: str, max_tokens: int) -> list:
    arrays = (("text_input", np.array([[prompt.encode()]], dtype=np.object_), "BYTES"),
              ("max_tokens", np.array([[max_tokens]], dtype=np.int32), "INT32"),
              ("stream", np.array([[True]], dtype=bool), "BOOL"))
    out = []
    for name, array, dtype in arrays:
        tensor = g.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def _drain(inbox: queue.Queue) -> tuple[int, int]:
    n = 0
    while True:
        result, error = inbox.get(timeout=60)
        if error is not None:
            return n, 1
        if result.as_numpy("text_output") is not None:
            n += 1
        if result.get_response().parameters["triton_final_response"].bool_param:
            return n, 0


def bench_once(target: BenchTarget, concurrency: int, plan, requests: int) -> dict:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    level = measure_level(target, concurrency, plan, requests=requests)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "requests": level.requests, "errors": level.errors,
            "tokens": level.output_tokens, "level_wall_s": level.wall_s}


def summarize(runs: list[dict]) -> dict:
    """Medians over rounds. Wall and CPU include opening the streams and one warm-up request
    per stream, alike for both clients."""
    cpu_per_req = [r["cpu_s"] / r["requests"] for r in runs]
    rps = [r["requests"] / r["wall_s"] for r in runs]
    tps = [r["tokens"] / r["wall_s"] for r in runs]
    med_cpu = statistics.median(cpu_per_req)
    return {"runs": len(runs), "requests_per_run": runs[0]["requests"],
            "errors": sum(r["errors"] for r in runs),
            "client_cpu_ms_per_request": round(med_cpu * 1000, 3),
            "requests_per_s": round(statistics.median(rps), 1),
            "output_tokens_per_s": round(statistics.median(tps), 1),
            "client_bound_requests_per_s_one_core": round(1 / med_cpu, 0) if med_cpu > 0 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="requests per measurement, mix workloads")
    parser.add_argument("--tiny-requests", type=int, default=200, help="requests per measurement, tiny requests")
    args = parser.parse_args()
    workloads = [  # (name, mix, concurrency, requests)
        ("mix_c1", parse_mix(DEFAULT_MIX), 1, args.requests),
        ("mix_c4", parse_mix(DEFAULT_MIX), 4, args.requests),
        ("tiny_c4", parse_mix([(8, 1, 1)]), 4, args.tiny_requests),
    ]
    figures: dict = {"rounds": args.rounds, "order": "plain, bench, bench, plain in each round",
                     "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack")
        state = stack.up()
        try:
            ckpt = make_reference_checkpoint(work / "ckpt", seed=1)
            build_engine(ckpt, work / "engine", PARAMS, model_name=MODEL, version=1)
            install_version(work / "engine", state["model_repository"], model_name=MODEL, version=1)
            TritonControl(state["components"]["triton"]["url"],
                          model_repository=state["model_repository"]).load_versions(MODEL, [1])
            grpc_url = state["components"]["triton"]["grpc_url"]
            target = BenchTarget(grpc_url, MODEL, 1, max_input_len=256, max_seq_len=512)
            for name, mix, concurrency, requests in workloads:
                plan = RequestPlan(mix, seed=7)
                plain_runs, bench_runs = [], []
                for _ in range(args.rounds):
                    plain_runs.append(plain_loop(grpc_url, concurrency, plan, requests))
                    bench_runs.append(bench_once(target, concurrency, plan, requests))
                    bench_runs.append(bench_once(target, concurrency, plan, requests))
                    plain_runs.append(plain_loop(grpc_url, concurrency, plan, requests))
                plain, bench = summarize(plain_runs), summarize(bench_runs)
                ratio = bench["client_cpu_ms_per_request"] / plain["client_cpu_ms_per_request"]
                figures["workloads"][name] = {
                    "concurrency": concurrency, "mix": [vars(e) for e in mix],
                    "plain_tritonclient": plain, "perf_bench": bench,
                    "bench_over_plain_cpu_per_request": round(ratio, 3),
                    "bench_over_plain_requests_per_s": round(bench["requests_per_s"] / plain["requests_per_s"], 3),
                }
                print(f"{name}: client CPU/request bench {bench['client_cpu_ms_per_request']:.2f} ms vs plain "
                      f"{plain['client_cpu_ms_per_request']:.2f} ms (x{ratio:.2f}); requests/s bench "
                      f"{bench['requests_per_s']} vs plain {plain['requests_per_s']}")
        finally:
            stack.down()
    write_results("perf_bench_overhead", figures)


if __name__ == "__main__":
    main()
