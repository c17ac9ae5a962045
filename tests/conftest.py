"""Shared fixtures: one real local stack per test session, reference engines installed in it.

A stack that cannot start fails the tests that need it; nothing here skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.postgres import postgres_url  # noqa: F401
from tests.fixtures.registry import oci_registry  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "reference_lm"
BUILD_PARAMS = {"precision": "fp32", "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from llm_release.stack.local import LocalStack

    local = LocalStack(tmp_path_factory.mktemp("stack"))
    state = local.up()
    try:
        yield {"stack": local, "state": state, **state}
    finally:
        local.down()


@pytest.fixture(scope="session")
def urls(stack):
    comps = stack["components"]
    return {
        "triton": comps["triton"]["url"],
        "gateway": comps["envoy"]["url"],
        "envoy_admin": comps["envoy"]["admin_url"],
        "prometheus": comps["prometheus"]["url"],
        "s3": comps["s3"]["url"],
    }


@pytest.fixture(scope="session")
def engines(stack, tmp_path_factory):
    """Versions 1 and 2 of the reference model, from two checkpoints, installed in the stack."""
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint
    from llm_release.model_repo import install_version

    work = tmp_path_factory.mktemp("engines")
    built = {}
    for version, seed, precision in ((1, 1, "fp32"), (2, 2, "fp16"), (3, 3, "int8")):
        ckpt = make_reference_checkpoint(work / f"ckpt{seed}", seed=seed)
        params = dict(BUILD_PARAMS, precision=precision)
        built[version] = build_engine(ckpt, work / f"engine{version}", params, model_name=MODEL, version=version)
        if version < 3:  # v3 stays uninstalled: tests install it when they need a fresh version
            install_version(work / f"engine{version}", stack["model_repository"], model_name=MODEL, version=version)
    return {"dir": work, "metadata": built}


@pytest.fixture(scope="session")
def s3_client(stack):
    """boto3 on the stack's S3 (moto), with the credentials its Airflow connection holds."""
    import json

    import boto3

    conn = json.loads(Path(stack["connections"]["json"]).read_text())["llm_artifacts_s3"]
    return boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], region_name=conn["extra"]["region_name"],
                        aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])


@pytest.fixture()
def s3_store(s3_client):
    """An artifact store in a bucket of its own, so tests never see each other's versions."""
    import uuid

    from llm_release.artifacts.stores.s3 import S3Store

    bucket = f"artifacts-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    return S3Store(s3_client, bucket, prefix="engines")


@pytest.fixture(scope="session")
def triton(stack):
    from llm_release.triton_control import TritonControl

    return TritonControl(stack["components"]["triton"]["url"], model_repository=stack["model_repository"])


@pytest.fixture(scope="session")
def loaded(triton, engines):
    """Versions 1 and 2 loaded side by side."""
    triton.load_versions(MODEL, [1, 2])
    return [1, 2]


@pytest.fixture(scope="session")
def router(stack):
    from llm_release.stack.local import gateway_router

    return gateway_router(stack["state"])


@pytest.fixture()
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("AIRFLOW"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory, stack):
    """One isolated Airflow home (SQLite, migrated once) with the stack's connections and variables."""
    from tests.airflow.harness import airflow_environment

    return airflow_environment(tmp_path_factory.mktemp("airflow_home"), stack["state"])
