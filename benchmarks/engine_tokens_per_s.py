"""Reference engine speed: tokens/s per precision in-process, and served (Triton + Envoy), side by side.

The in-process figure is the model's own cost; the served figure adds Triton's Python backend
and the gateway. Their ratio shows what serving costs on this machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.engine.runtime import ReferenceLM  # noqa: E402
from llm_release.model_repo import install_version  # noqa: E402
from llm_release.stack.local import LocalStack, gateway_router  # noqa: E402
from llm_release.triton_control import TritonControl  # noqa: E402

MODEL = "bench_lm"
PRECISIONS = ("fp32", "fp16", "int8")
PROMPT = "A release moves traffic"


def in_process(engine_dir: Path, tokens: int, repeats: int) -> float:
    lm = ReferenceLM.load(engine_dir / "engine")
    started = time.perf_counter()
    produced = 0
    for i in range(repeats):
        produced += sum(1 for _ in lm.generate(f"{PROMPT} {i}", tokens))
    return produced / (time.perf_counter() - started)


def served(url: str, version: int, tokens: int, repeats: int, concurrency: int) -> float:
    def one(i: int) -> int:
        resp = requests.post(f"{url}/v2/models/{MODEL}/versions/{version}/generate_stream",
                             json={"text_input": f"{PROMPT} {i}", "max_tokens": tokens, "stream": True},
                             stream=True, timeout=120)
        resp.raise_for_status()
        return sum(1 for line in resp.iter_lines() if line.startswith(b"data: "))

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        produced = sum(pool.map(one, range(repeats)))
    return produced / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    figures: dict = {"tokens_per_request": args.tokens, "requests": args.repeats, "by_precision": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack")
        state = stack.up()
        try:
            ckpt = make_reference_checkpoint(work / "ckpt", seed=1)
            for version, precision in enumerate(PRECISIONS, start=1):
                params = {"precision": precision, "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 1024}
                build_engine(ckpt, work / precision, params, model_name=MODEL, version=version)
                install_version(work / precision, state["model_repository"], model_name=MODEL, version=version)
            triton = TritonControl(state["components"]["triton"]["url"], model_repository=state["model_repository"])
            triton.load_versions(MODEL, list(range(1, len(PRECISIONS) + 1)))
            envoy = state["components"]["envoy"]
            gateway_router(state).set_weights(MODEL, {1: 100})
            for version, precision in enumerate(PRECISIONS, start=1):
                local = in_process(work / precision, args.tokens, args.repeats)
                single = served(envoy["url"], version, args.tokens, args.repeats, 1)
                multi = served(envoy["url"], version, args.tokens, args.repeats, args.concurrency)
                figures["by_precision"][precision] = {
                    "in_process_tokens_per_s": round(local, 1),
                    "served_single_stream_tokens_per_s": round(single, 1),
                    f"served_{args.concurrency}_streams_tokens_per_s": round(multi, 1),
                    "served_single_over_in_process": round(single / local, 3),
                }
                print(f"{precision}: in-process {local:.0f} tok/s, served 1 stream {single:.0f} tok/s, "
                      f"{args.concurrency} streams {multi:.0f} tok/s")
        finally:
            stack.down()
    write_results("engine_tokens_per_s", figures)


if __name__ == "__main__":
    main()
