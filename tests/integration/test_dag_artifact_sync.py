"""End to end: publish version 3 of the reference engine to S3, run the hourly sync DAG with
dag.test(), and Triton serves version 3 while 1 and 2 still answer."""

from __future__ import annotations

import json

import pytest

from tests.airflow.harness import dag_test

MODEL = "reference_lm"


@pytest.fixture()
def s3_store(stack):
    import boto3

    from llm_release.artifacts.stores.s3 import S3Store
    from llm_release.stack.airflow_connections import ARTIFACT_BUCKET, ARTIFACT_PREFIX

    conn = json.loads(open(stack["connections"]["json"]).read())["llm_artifacts_s3"]
    client = boto3.client("s3", endpoint_url=conn["extra"]["endpoint_url"], region_name=conn["extra"]["region_name"],
                          aws_access_key_id=conn["login"], aws_secret_access_key=conn["password"])
    return S3Store(client, ARTIFACT_BUCKET, ARTIFACT_PREFIX)


def test_sync_dag_installs_and_loads_version_3_beside_1_and_2(airflow_env, triton, engines, loaded, s3_store):
    from llm_release.artifacts.publish import publish_engine
    from llm_release.model_repo import installed_versions, remove_version

    triton.load_versions(MODEL, [1, 2])
    if 3 in installed_versions(triton.model_repository, MODEL):
        remove_version(triton.model_repository, MODEL, 3)  # a clean start for this test
    for version in (1, 2, 3):
        publish_engine(engines["dir"] / f"engine{version}", s3_store)

    dry = dag_test(airflow_env, "artifact_sync", {"model": MODEL, "dry_run": True})
    assert dry.get("state") == "success", dry
    assert [(a["version"], a["kind"]) for a in dry["xcoms"]["plan_region[0]"]["report"]["actions"]] == \
        [(1, "unchanged"), (2, "unchanged"), (3, "install")]
    assert 3 not in installed_versions(triton.model_repository, MODEL)

    result = dag_test(airflow_env, "artifact_sync", {"model": MODEL})
    assert result.get("state") == "success", result
    assert result["tasks"]["sync_model"] == "success"
    installed = [a for a in result["xcoms"]["sync_model[0]"]["actions"] if a["kind"] == "install"]
    assert [a["version"] for a in installed] == [3] and installed[0]["bytes"] > 0
    assert result["xcoms"]["sync_model[0]"]["listing_requests"] == 0  # the plan's listing was reused
    assert installed_versions(triton.model_repository, MODEL) == [1, 2, 3]
    assert triton.ready_versions(MODEL) == [1, 2, 3]
    for version in (1, 2, 3):
        assert triton.probe(MODEL, version).version == version

    again = dag_test(airflow_env, "artifact_sync", {"model": MODEL})
    assert again.get("state") == "success", again
    plan = again["xcoms"]["plan_region[0]"]
    assert plan["work"] == [] and again["tasks"]["sync_model"] == "skipped"  # nothing to do: no sync task
    assert plan["report"]["listing_requests"] == 1 and plan["report"]["bytes_downloaded"] == 0
    assert {a["kind"] for a in plan["report"]["actions"]} == {"unchanged"}
    triton.load_versions(MODEL, [1, 2])  # what the other tests expect


@pytest.mark.parametrize("conf, field", [({"version": 0}, "version"), ({"model": "../x"}, "model"),
                                         ({"keep_latest": 0}, "keep_latest")])
def test_invalid_sync_params_are_refused_before_any_task_runs(airflow_env, conf, field):
    result = dag_test(airflow_env, "artifact_sync", conf)
    assert result.get("error") == "ParamValidationError", result
    assert field in result["message"]
