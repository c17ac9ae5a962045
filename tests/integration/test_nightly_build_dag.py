"""The nightly build DAG with dag.test() on the real stack and the reference builder.

v1 of a model is published and serves all its traffic. The nightly then builds v2 from changed
inputs, serves it as a candidate beside v1 (no traffic), passes the golden prompts and the perf
bench against v1, publishes it and retires the candidate; a second run the same night builds
nothing; a forced run whose golden suite the engine cannot pass publishes nothing and names the
failing prompt.
"""

from __future__ import annotations

import json

import pytest

from llm_release.artifacts.manifest import Manifest
from llm_release.artifacts.publish import publish_engine
from llm_release.artifacts.stores.s3 import S3Store
from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import checkpoint_digest
from llm_release.model_repo import install_version, installed_versions
from llm_release.quality.golden import default_suite_path
from llm_release.routing.state import RoutingState
from llm_release.stack.airflow_connections import ARTIFACT_BUCKET, ARTIFACT_PREFIX, reference_checkpoint_dir
from tests.airflow.harness import dag_test

MODEL = "nightly_lm"
LIMITS_V1 = {"max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}
# Medians, generously: two CPUs shared by Triton, Envoy, Prometheus and the bench make tail
# latencies of 30 requests noise (docs/quality.md); the gates' arithmetic is unit-tested.
PERF_GATES = {"ttft_p95_ms": None, "itl_p95_ms": None, "ttft_p50_ms": 100, "itl_p50_ms": 100,
              "output_tokens_per_s": 50}
LIMITS_TONIGHT = {"max_batch_size": 4, "max_input_len": 256, "max_seq_len": 512}  # changed input: same answers


@pytest.fixture(scope="module")
def store(s3_client):
    return S3Store(s3_client, ARTIFACT_BUCKET, ARTIFACT_PREFIX)  # where the nightly Variable publishes


@pytest.fixture(scope="module")
def stable_v1(stack, store, triton, router, tmp_path_factory):
    """v1 published, installed, loaded and taking all of the model's traffic."""
    checkpoint = reference_checkpoint_dir(stack["state"])
    engine = tmp_path_factory.mktemp("nightly") / "v1"
    build_engine(checkpoint, engine, dict(LIMITS_V1, precision="fp32"), model_name=MODEL, version=1)
    publish_engine(engine, store)
    install_version(engine, stack["model_repository"], model_name=MODEL, version=1)
    triton.load_versions(MODEL, [1])
    router.apply(RoutingState(MODEL, {1: 100}))
    try:
        yield engine
    finally:  # the session's Triton serves the other modules' models alone again
        triton.unload_versions(MODEL, triton.ready_versions(MODEL) or [1])


def nightly(airflow_env, stack, **conf):
    models = [{"model": MODEL, "checkpoint": str(reference_checkpoint_dir(stack["state"]))}]
    # The reference model's shipped suite (this line is the same model under another name).
    conf = {"golden_suite": str(default_suite_path("reference_lm")), **conf}
    return dag_test(airflow_env, "nightly_build", {"models": models, "precisions": ["fp32"], "tp_sizes": [1],
                                                   "limits": LIMITS_TONIGHT, "perf_concurrencies": [1, 2],
                                                   "perf_requests_per_level": 30, "perf_gates": PERF_GATES,
                                                   **conf})


def test_changed_inputs_are_built_checked_against_stable_and_published_then_nothing_is_rebuilt(
        airflow_env, stack, store, triton, router, stable_v1):
    result = nightly(airflow_env, stack)
    assert result.get("state") == "success", json.dumps(result)[-4000:]
    plan = result["xcoms"]["plan"]
    assert [(p["model"], p["version"]) for p in plan] == [(MODEL, 2)]
    assert "max_batch_size" in json.dumps(plan[0]["inputs"]) and plan[0]["reason"] == "build_params changed since v1"

    golden = result["xcoms"]["golden_prompts[0]"]["golden"]
    assert golden["passed"] and golden["stable_version"] == 1 and golden["total"] >= 3, golden
    perf = result["xcoms"]["perf_bench[0]"]["perf"]
    assert perf["passed"] and perf["stable_version"] == 1, perf
    published = Manifest.from_bytes(store.fetch_manifest(MODEL, 2))
    assert published.metadata.build_params["max_batch_size"] == 4
    assert published.metadata.source_checkpoint_digest == checkpoint_digest(reference_checkpoint_dir(stack["state"]))
    assert result["xcoms"]["publish[0]"]["manifest_digest"] == published.digest
    # Reports a person can open, and the candidate gone from the test environment.
    for path in (golden["report_path"], perf["report_path"], perf["plot_path"]):
        assert open(path).read().strip()
    assert installed_versions(stack["model_repository"], MODEL) == [1]
    assert triton.ready_versions(MODEL) == [1]
    assert router.get_state(MODEL) == RoutingState(MODEL, {1: 100})

    again = nightly(airflow_env, stack)
    assert again.get("state") == "success", json.dumps(again)[-3000:]
    assert again["xcoms"]["plan"] == []
    assert "inputs match the published v2" in again["output"]
    assert not [k for k in again["tasks"] if k.startswith("build") and again["tasks"][k] == "success"]


def test_a_candidate_failing_a_golden_prompt_is_not_published_and_the_run_names_the_prompt(
        airflow_env, stack, store, triton, stable_v1, tmp_path):
    suite = tmp_path / "strict.yaml"
    suite.write_text(
        "suite: strict\npass_rate: 1.0\ncases:\n"
        "  - id: always_answers\n    prompt: 'Triton'\n    max_tokens: 4\n    expect: {regex: '.+'}\n"
        "  - id: impossible_answer\n    prompt: 'The capital of France is'\n    max_tokens: 4\n"
        "    expect: {exact: 'a sentence this model never writes'}\n")
    before = sorted(v for m, v in store.list_published().versions if m == MODEL)
    result = nightly(airflow_env, stack, force=True, golden_suite=str(suite))
    assert result.get("state") == "failed", json.dumps(result)[-3000:]
    assert "impossible_answer" in result["output"]
    assert sorted(v for m, v in store.list_published().versions if m == MODEL) == before
    assert installed_versions(stack["model_repository"], MODEL) == [1]
    assert triton.ready_versions(MODEL) == [1]
