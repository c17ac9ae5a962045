"""A no-op sync of 100 models x 3 versions: time, requests made, bytes moved (must be 0).

Publishes 300 small versions to S3 (moto over HTTP), syncs them once into an empty model
repository, then syncs again and measures the second run, counting every HTTP request the S3
client sends.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.artifacts.publish import publish_engine  # noqa: E402
from llm_release.artifacts.stores.s3 import S3Store  # noqa: E402
from llm_release.artifacts.sync import SyncOptions, run_sync  # noqa: E402
from llm_release.engine.builder import build_engine  # noqa: E402
from llm_release.engine.checkpoint import make_reference_checkpoint  # noqa: E402
from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, LocalStack  # noqa: E402

PARAMS = {"precision": "fp32", "max_batch_size": 2, "max_input_len": 16, "max_seq_len": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--versions", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack")
        state = stack.up()
        try:
            import boto3

            client = boto3.client("s3", endpoint_url=state["components"]["s3"]["url"], region_name=S3_REGION,
                                  aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
            client.create_bucket(Bucket="bench")
            requests_sent = []
            client.meta.events.register("before-send.s3", lambda request, **_: requests_sent.append(request.method))
            store = S3Store(client, "bench", "engines")
            ckpt = make_reference_checkpoint(work / "ckpt", seed=1, d_model=16, n_layers=1, n_heads=2)
            for m in range(args.models):
                for v in range(1, args.versions + 1):
                    engine = work / "engines" / f"m{m:03d}-v{v}"
                    build_engine(ckpt, engine, PARAMS, model_name=f"m{m:03d}", version=v)
                    publish_engine(engine, store)
            first_started = time.perf_counter()
            first = run_sync(store, work / "repo", SyncOptions(keep_latest=args.versions))
            first_s = time.perf_counter() - first_started
            requests_sent.clear()
            started = time.perf_counter()
            second = run_sync(store, work / "repo", SyncOptions(keep_latest=args.versions))
            noop_s = time.perf_counter() - started
        finally:
            stack.down()
    figures = {
        "models": args.models, "versions_per_model": args.versions,
        "first_sync": {"seconds": round(first_s, 2), "installed": len(first.of_kind("install")),
                       "bytes": first.bytes_downloaded},
        "noop_sync": {"seconds": round(noop_s, 3), "http_requests": len(requests_sent),
                      "listing_requests": second.listing_requests, "bytes_moved": second.bytes_downloaded,
                      "unchanged": len(second.of_kind("unchanged"))},
    }
    print(json.dumps(figures, indent=2))
    write_results("noop_sync", figures)


if __name__ == "__main__":
    main()
