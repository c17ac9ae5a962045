"""PublishOperator and ArtifactSyncOperator as a worker runs them: connections from Airflow,
S3 through the amazon provider's S3Hook, OCI through OciRegistryHook."""

from __future__ import annotations

import json

import pytest

from tests.airflow.harness import run_operator

PUBLISH = "llm_release_airflow.operators.artifacts.PublishOperator"
SYNC = "llm_release_airflow.operators.artifacts.ArtifactSyncOperator"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint

    work = tmp_path_factory.mktemp("op-engine")
    ckpt = make_reference_checkpoint(work / "ckpt", seed=7)
    out = work / "engine"
    build_engine(ckpt, out, {"precision": "int8", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 64},
                 model_name="op_lm", version=5)
    return out


def test_publish_operator_uploads_through_the_s3_hook_once(airflow_env, engine):
    destination = {"kind": "s3", "conn_id": "llm_artifacts_s3", "bucket": "llm-artifacts", "prefix": "operator-test"}
    first = run_operator(airflow_env, PUBLISH, engine_dir=str(engine), destination=destination)
    assert first["result"]["uploaded"] is True, first
    again = run_operator(airflow_env, PUBLISH, engine_dir=str(engine), destination=destination)
    assert again["result"]["uploaded"] is False
    assert again["result"]["manifest_digest"] == first["result"]["manifest_digest"]


def test_publish_to_oci_then_sync_a_region_from_it(airflow_env, engine, oci_registry, tmp_path):
    host, port = oci_registry.split(":")
    env = dict(airflow_env, AIRFLOW_CONN_OCI_LOCAL=json.dumps(
        {"conn_type": "oci_registry", "host": host, "port": int(port), "extra": {"insecure": True}}))
    source = {"kind": "oci", "conn_id": "oci_local", "prefix": "engines"}
    published = run_operator(env, PUBLISH, engine_dir=str(engine), destination=source)
    assert published["result"]["uploaded"] is True, published
    target = {"region": "edge-1", "model_repository": str(tmp_path / "repo"), "triton_conn_id": None, "source": source}
    synced = run_operator(env, SYNC, target=target, model="op_lm")
    assert synced.get("result"), synced
    assert [(a["version"], a["kind"]) for a in synced["result"]["actions"]] == [(5, "install")]
    assert (tmp_path / "repo" / "op_lm" / "5" / "metadata.json").exists()


def test_sync_operator_refuses_a_bad_target_naming_the_field(airflow_env, tmp_path):
    target = {"region": "Bad Region", "model_repository": str(tmp_path), "source": {"kind": "s3", "conn_id": "x", "bucket": "b"}}
    out = run_operator(airflow_env, SYNC, target=target)
    assert out["error"] == "PermanentTaskError" and out["cause"] == "SpecError", out  # failed at once, no retry
    assert "targets[0].region" in out["message"]
