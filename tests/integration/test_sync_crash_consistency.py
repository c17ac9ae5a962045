"""SIGKILL the sync at random points: the repository and Triton never see a partial version,
and the next run converges."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from llm_release.artifacts.publish import publish_engine
from llm_release.artifacts.stores.s3 import S3Store
from llm_release.metadata import verify_engine
from llm_release.model_repo import installed_versions, remove_version

MODEL = "crashy_lm"
VERSIONS = (1, 2, 3)
TRIALS = 20

CHILD = r"""
import json, logging, sys
import boto3
from llm_release.artifacts.stores.s3 import S3Store
from llm_release.artifacts.sync import SyncOptions, run_sync
from llm_release.triton_control import TritonControl
cfg = json.loads(sys.argv[1])
logging.basicConfig(level=logging.INFO)
client = boto3.client("s3", **cfg["s3"])
store = S3Store(client, cfg["bucket"], cfg["prefix"])
triton = TritonControl(cfg["triton"], model_repository=cfg["repo"])
print("READY", flush=True)
report = run_sync(store, cfg["repo"], SyncOptions(models=(cfg["model"],)), triton=triton)
print("DONE", json.dumps({"failed": report.failed}), flush=True)
"""


@pytest.fixture(scope="module")
def published(stack, tmp_path_factory):
    """Three bigger versions (a few MB each, so a kill can land inside a download)."""
    import boto3

    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint

    conn = json.loads(open(stack["connections"]["json"]).read())["llm_artifacts_s3"]
    s3 = {"endpoint_url": conn["extra"]["endpoint_url"], "region_name": conn["extra"]["region_name"],
          "aws_access_key_id": conn["login"], "aws_secret_access_key": conn["password"]}
    client = boto3.client("s3", **s3)
    client.create_bucket(Bucket="crash-test")
    store = S3Store(client, "crash-test", "engines")
    work = tmp_path_factory.mktemp("crashy")
    for version in VERSIONS:
        ckpt = make_reference_checkpoint(work / f"ckpt{version}", seed=version, d_model=256, n_layers=4)
        engine = work / f"engine{version}"
        build_engine(ckpt, engine, {"precision": "fp32", "max_batch_size": 4, "max_input_len": 64, "max_seq_len": 128},
                     model_name=MODEL, version=version)
        publish_engine(engine, store)
    return {"s3": s3, "bucket": "crash-test", "prefix": "engines", "model": MODEL,
            "repo": stack["model_repository"], "triton": stack["components"]["triton"]["url"]}


def start_child(cfg) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def assert_no_partial_version(repo, triton):
    model_dir = repo / MODEL
    for version in installed_versions(repo, MODEL):
        verify_engine(model_dir / str(version))  # every file present with its sha256
    for entry in triton.repository_index():
        if entry.get("name") == MODEL and entry.get("state") in ("READY", "LOADING"):
            assert int(entry["version"]) in installed_versions(repo, MODEL), entry


def test_sigkill_at_random_points_never_leaves_a_partial_version(published, triton, stack):
    from pathlib import Path

    repo = Path(stack["model_repository"])
    started = time.monotonic()
    full = start_child(published)  # calibrate: how long does a whole sync take here?
    assert full.wait(timeout=120) == 0
    duration = time.monotonic() - started
    assert installed_versions(repo, MODEL) == list(VERSIONS)

    rng = random.Random(20261125)
    kills_inside = 0
    for _ in range(TRIALS):
        triton.load_versions(MODEL, [VERSIONS[0]])  # keep one serving, give the sync work to do
        for version in VERSIONS[1:]:
            remove_version(repo, MODEL, version)
        proc = start_child(published)
        time.sleep(rng.uniform(0, duration))
        if proc.poll() is None:
            kills_inside += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert_no_partial_version(repo, triton)
        installed = installed_versions(repo, MODEL)
        assert triton.load_versions(MODEL, installed) == installed  # whatever is there loads
    assert kills_inside >= TRIALS // 2, "most kills should land while the sync is running"

    final = start_child(published)
    out = final.stdout.read()
    assert final.wait(timeout=120) == 0 and '"failed": false' in out
    assert installed_versions(repo, MODEL) == list(VERSIONS)
    assert not [p.name for p in (repo / MODEL).iterdir() if p.name.startswith(".tmp-")]
    assert triton.ready_versions(MODEL) == list(VERSIONS)
    triton.load_versions(MODEL, [VERSIONS[0]])
