"""The nightly's build task as a worker runs it: one operator, the builder the plan names.

A `tensorrt_llm` plan goes through TRTLLMBuildOperator (the real KubernetesPodOperator path,
against the pods API double); a `reference` plan builds in the worker; a plan the pod's GPUs
cannot hold is refused before any pod exists.
"""

from __future__ import annotations

import json

import pendulum
import pytest

from llm_release.metadata import verify_engine
from tests.doubles.kubernetes_pods import PodScript
from tests.glue.test_build_operator import DIGEST_IMAGE, NS, RUN_ID, _TI, k8s, result_line  # noqa: F401 (fixture)

POD = {"namespace": NS, "checkpoint_pvc": "hf-checkpoints", "engine_pvc": "trt-engines", "gpus_per_node": 8,
       "kubernetes_conn_id": "k8s_builds", "startup_timeout_seconds": 5, "startup_check_interval_seconds": 0.05,
       "base_container_status_polling_interval": 0.05, "image": DIGEST_IMAGE,
       "calib_dataset": "/checkpoints/calibration/support-chats"}  # fp8 is calibrated: local data, no hub downloads


def plan(**overrides) -> dict:
    doc = {"model": "llama3_fp8_tp2", "source_model": "llama3", "version": 4, "builder": "tensorrt_llm",
           "build_params": {"precision": "fp8", "max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2048,
                            "tp_size": 2, "pp_size": 1},
           "checkpoint": "llama-3-8b-instruct", "checkpoint_digest": None, "engine_dir": "/engines/llama3_fp8_tp2/4",
           "model_family": "llama", "image": None, "action": "build", "reason": "", "inputs": {}}
    doc.update(overrides)
    return doc


def run_build(plan_doc: dict, pod: dict | None = None):
    from airflow.sdk import DAG

    from llm_release_airflow.operators.nightly import EngineBuildOperator

    with DAG("nightly_build", schedule=None, start_date=pendulum.datetime(2026, 1, 1),
             render_template_as_native_obj=True):
        operator = EngineBuildOperator(task_id="build", plan=plan_doc, pod=pod or POD)
    task = operator.prepare_for_execution()
    context = {"ti": _TI(), "run_id": RUN_ID, "dag": task.dag, "task": task, "params": {}}
    task.render_template_fields(context)
    return task.execute(context)


def test_a_tensorrt_llm_plan_is_built_on_a_gpu_pod_sized_by_its_parallelism(k8s):  # noqa: F811
    k8s.on_create(lambda manifest: PodScript(pending_s=0.05, running_s=0.1, logs=(
        result_line(model="llama3_fp8_tp2", engine_dir="/engines/llama3_fp8_tp2/4", precision="fp8"),)))
    result = run_build(plan())
    assert result["model"] == "llama3_fp8_tp2" and result["engine_dir"] == "/engines/llama3_fp8_tp2/4"
    assert result["builder"] == "tensorrt-llm" and result["checkpoint"] == "llama-3-8b-instruct"
    (pod,) = k8s.created
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] in (2, "2")
    assert container["image"] == DIGEST_IMAGE
    request = json.loads(container["command"][-1] if container.get("command") else container["args"][-1])
    assert request["params"]["precision"] == "fp8" and request["params"]["tp_size"] == 2
    assert k8s.deleted == [pod["metadata"]["name"]]


def test_a_plan_the_node_cannot_hold_is_refused_before_any_pod(k8s):  # noqa: F811
    from airflow.sdk.exceptions import AirflowFailException

    too_big = plan(build_params={**plan()["build_params"], "tp_size": 8, "pp_size": 2})
    with pytest.raises(AirflowFailException) as err:
        run_build(too_big)
    assert "tp_size" in str(err.value)
    assert k8s.created == [] and k8s.count("POST") == 0


def test_a_reference_plan_builds_in_the_worker(tmp_path):
    from llm_release.engine.checkpoint import make_reference_checkpoint

    checkpoint = make_reference_checkpoint(tmp_path / "ckpt", seed=3)
    engine_dir = tmp_path / "engines" / "ref_lm" / "1"
    doc = plan(model="ref_lm", version=1, builder="reference", checkpoint=str(checkpoint), engine_dir=str(engine_dir),
               model_family=None, build_params={"precision": "int8", "max_batch_size": 4, "max_input_len": 64,
                                                "max_seq_len": 128})
    result = run_build(doc, pod={})
    meta = verify_engine(engine_dir)
    assert (meta.model, meta.version, meta.precision, meta.builder) == ("ref_lm", 1, "int8", "reference-numpy")
    assert result == {"model": "ref_lm", "version": 1, "engine_dir": str(engine_dir), "builder": "reference-numpy",
                      "precision": "int8", "gpu_arch": "cpu", "checkpoint": str(checkpoint)}
    assert run_build(doc, pod={}) == result  # a retry keeps the identical engine
