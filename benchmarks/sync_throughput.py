"""Sync of a multi-GB engine from S3 (moto over HTTP) against `cp -r` and `aws s3 cp --recursive`.

Same data, same endpoint, one run. `cp -r` copies the engine directory on the local disk (the
floor for moving the bytes at all); `aws s3 cp --recursive` downloads the published objects
with no verification or install (what a hand-written sync would do); our sync downloads,
verifies every sha256, extracts and installs atomically. Ratios are to `cp -r` and to aws.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
from llm_release.metadata import EngineMetadata, hash_engine_files, read_metadata, write_metadata  # noqa: E402
from llm_release.stack.local import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, LocalStack  # noqa: E402

MODEL = "big_lm"


def big_engine(work: Path, size_gib: float) -> Path:
    """A reference engine plus a large engine blob (random bytes), with metadata updated."""
    ckpt = make_reference_checkpoint(work / "ckpt", seed=1)
    engine = work / "engine"
    build_engine(ckpt, engine, {"precision": "fp16", "max_batch_size": 8, "max_input_len": 128, "max_seq_len": 256},
                 model_name=MODEL, version=1)
    blob = engine / "engine" / "rank0.engine"
    chunk = os.urandom(16 << 20)
    with open(blob, "wb") as out:
        for _ in range(int(size_gib * 1024 / 16)):
            out.write(chunk)
    meta = read_metadata(engine)
    doc = meta.to_dict()
    doc["files"] = hash_engine_files(engine)
    write_metadata(engine, EngineMetadata.from_dict(doc))
    return engine


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        stack = LocalStack(work / "stack")
        state = stack.up()
        try:
            endpoint = state["components"]["s3"]["url"]
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION,
                                  aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY)
            client.create_bucket(Bucket="bench")
            store = S3Store(client, "bench", "engines")
            engine = big_engine(work, args.size_gib)
            size = sum(p.stat().st_size for p in engine.rglob("*") if p.is_file())
            publish_s = timed(lambda: publish_engine(engine, store))

            cp_s = timed(lambda: subprocess.run(["cp", "-r", str(engine), str(work / "cp-copy")], check=True))
            env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY,
                       AWS_DEFAULT_REGION=S3_REGION)
            aws = shutil.which("aws", path=os.path.dirname(sys.executable)) or "aws"
            aws_s = timed(lambda: subprocess.run([aws, "s3", "cp", "--recursive", "--only-show-errors",
                                                  "--endpoint-url", endpoint, "s3://bench/engines/",
                                                  str(work / "aws-copy")], check=True, env=env))
            report = None

            def sync():
                nonlocal report
                report = run_sync(store, work / "repo", SyncOptions())

            sync_s = timed(sync)
            noop_s = timed(lambda: run_sync(store, work / "repo", SyncOptions()))
        finally:
            stack.down()
    mib = size / (1 << 20)
    figures = {
        "engine_bytes": size,
        "publish_s": round(publish_s, 2),
        "cp_r": {"seconds": round(cp_s, 2), "mib_per_s": round(mib / cp_s, 1)},
        "aws_s3_cp_recursive": {"seconds": round(aws_s, 2), "mib_per_s": round(mib / aws_s, 1)},
        "llm_release_sync": {"seconds": round(sync_s, 2), "mib_per_s": round(mib / sync_s, 1),
                             "bytes_downloaded": report.bytes_downloaded, "files": report.files_installed,
                             "verifies_sha256": True, "atomic_install": True},
        "ratio_sync_over_cp": round(sync_s / cp_s, 2),
        "ratio_sync_over_aws": round(sync_s / aws_s, 2),
        "noop_sync_s": round(noop_s, 3),
    }
    print(json.dumps(figures, indent=2))
    write_results("sync_throughput", figures)


if __name__ == "__main__":
    main()
