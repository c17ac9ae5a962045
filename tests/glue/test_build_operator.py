"""TRTLLMBuildOperator through the real KubernetesPodOperator code path (cncf-kubernetes 10.25, the
official kubernetes client, KubernetesHook reading a `kubernetes` connection) against the pods
API double: the pod sent is the core's manifest, the build's log reaches the task log, its
result line becomes the XCom, failures say what happened to the container, the pod is deleted
in every case, and bad input never reaches the API."""

from __future__ import annotations

import json

import pendulum
import pytest

from llm_release.errors import SpecError
from tests.doubles.kubernetes_pods import KubernetesPodsDouble, PodScript

DIGEST_IMAGE = "registry.example.com/llm-release-build@sha256:" + "ab" * 32
NS = "llm-builds"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
PARAMS = {"precision": "fp16", "max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2048, "tp_size": 2,
          "pp_size": 2}
NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
               {"key": "dedicated", "operator": "Equal", "value": "llm-build", "effect": "NoSchedule"}]


def result_line(**overrides) -> str:
    result = {"model": "llama3", "version": 4, "engine_dir": "/engines/llama3/4", "gpu_arch": "sm90",
              "trtllm_version": "1.0.0", "precision": "fp16", "files": 7, "bytes": 123, "reused": False, **overrides}
    return "LLM_RELEASE_RESULT " + json.dumps(result, sort_keys=True)


BUILD_LOG = ("[convert] 0.4 s python3 /app/tensorrt_llm/examples/models/core/llama/convert_checkpoint.py ...",
             "[trtllm-build] 12.0 s [TensorRT-LLM][INFO] Engine generation completed",
             "built llama3 v4 into /engines/llama3/4: 7 files, 123 bytes, 42.0 s")


@pytest.fixture()
def k8s(connection):
    """The pods double, and a `kubernetes` connection whose extra carries a kubeconfig for it."""
    with KubernetesPodsDouble() as double:
        connection("k8s_builds", conn_type="kubernetes",
                   extra={"kube_config": json.dumps(double.kubeconfig(namespace=NS))})
        yield double


class _TI:
    """The task instance a worker hands execute(): identity for the pod's labels, and XCom."""

    dag_id, task_id, map_index = "nightly_build", "build", -1

    def __init__(self, try_number: int = 1):
        self.try_number = try_number
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = json.loads(json.dumps(value))


def make_operator(**overrides):
    """The operator inside a DAG with native rendering, templated from the run's params."""
    from airflow.sdk import DAG

    from llm_release_airflow.operators.build import TRTLLMBuildOperator

    kwargs = dict(model="{{ params.model }}", version="{{ params.version }}", model_family="llama",
                  checkpoint="llama-3-8b-instruct", build_params="{{ params.build_params }}", image=DIGEST_IMAGE,
                  namespace=NS, checkpoint_pvc="hf-checkpoints", engine_pvc="trt-engines", gpus_per_node=8,
                  node_selector=NODE_SELECTOR, tolerations=TOLERATIONS,
                  resources={"requests": {"cpu": "16", "memory": "96Gi"}, "limits": {"memory": "192Gi"}},
                  timeout=7200, kubernetes_conn_id="k8s_builds", startup_timeout_seconds=5,
                  startup_check_interval_seconds=0.05, base_container_status_polling_interval=0.05)
    kwargs.update(overrides)
    with DAG("nightly_build", schedule=None, start_date=pendulum.datetime(2026, 1, 1),
             render_template_as_native_obj=True):
        return TRTLLMBuildOperator(task_id="build", **kwargs)


def run(operator, *, ti: _TI | None = None, params: dict | None = None):
    """As a worker runs a task: on a copy (prepare_for_execution), render the template fields with
    the run's context, then execute."""
    ti = ti or _TI()
    task = operator.prepare_for_execution()
    context = {"ti": ti, "run_id": RUN_ID, "dag": task.dag, "task": task,
               "params": {"model": "llama3", "version": 4, "build_params": PARAMS, **(params or {})}}
    task.render_template_fields(context)
    return task.execute(context), ti


def test_a_build_runs_the_cores_pod_streams_its_log_returns_its_result_and_deletes_the_pod(k8s, capsys):
    k8s.on_create(lambda manifest: PodScript(pending_s=0.2, running_s=0.4, logs=(*BUILD_LOG, result_line())))

    result, ti = run(make_operator())

    assert result == json.loads(result_line().split(" ", 1)[1])
    assert len(k8s.created) == 1
    pod = k8s.created[0]
    name = pod["metadata"]["name"]
    assert name.startswith("trtllm-build-llama3-v4-")
    assert ti.xcom["pod_name"] == name and ti.xcom["pod_namespace"] == NS
    # the build's progress is in the task log (Airflow's structlog writes it to stdout here), line by line
    logged = capsys.readouterr().out
    for line in BUILD_LOG:
        assert f"[build] {line} [airflow.providers.cncf.kubernetes.utils.pod_manager.PodManager]" in logged
    # the pod is gone, and was deleted by us, once
    assert k8s.deleted == [name] and not k8s.exists(name)
    assert k8s.count("DELETE") == 1 and k8s.count("PATCH") == 0  # a succeeded pod needs no already_checked mark
    assert k8s.count("GET", what="log") == 1  # the result came from the followed stream, not a second read


def test_the_pod_sent_is_the_cores_manifest_with_the_operators_labels(k8s):
    from llm_release.build.trtllm import TrtllmBuildRequest

    k8s.on_create(lambda manifest: PodScript(pending_s=0.05, running_s=0.1, logs=(result_line(),)))
    run(make_operator())

    pod = k8s.created[0]
    spec, labels = pod["spec"], pod["metadata"]["labels"]
    assert pod["metadata"]["namespace"] == NS and spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 7200
    (container,) = spec["containers"]
    assert container["image"] == DIGEST_IMAGE
    gpus = str(PARAMS["tp_size"] * PARAMS["pp_size"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["cpu"] == "16" and container["resources"]["limits"]["memory"] == "192Gi"
    assert spec["nodeSelector"] == NODE_SELECTOR and spec["tolerations"] == TOLERATIONS
    claims = {v["persistentVolumeClaim"]["claimName"]: v for v in spec["volumes"] if "persistentVolumeClaim" in v}
    assert set(claims) == {"hf-checkpoints", "trt-engines"}
    assert claims["hf-checkpoints"]["persistentVolumeClaim"]["readOnly"] is True
    assert not claims["trt-engines"]["persistentVolumeClaim"].get("readOnly")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts[claims["hf-checkpoints"]["name"]]["readOnly"] is True
    assert not mounts[claims["trt-engines"]["name"]].get("readOnly")
    # an argv list, its last element the request as JSON, which round-trips to what was asked
    command = container["command"]
    assert isinstance(command, list) and command[:4] == ["llm-release", "engine", "build-trtllm", "--request"]
    request = TrtllmBuildRequest.from_dict(json.loads(command[-1]))
    assert (request.model, request.version, request.model_family) == ("llama3", 4, "llama")
    assert request.checkpoint_dir == "/checkpoints/llama-3-8b-instruct" and request.engine_dir == "/engines/llama3/4"
    assert request.params.to_dict() == {**request.params.to_dict(), **PARAMS}
    assert TrtllmBuildRequest.from_dict(request.to_dict()) == request
    # KubernetesPodOperator's labels, so a retry finds (or cleans up) this pod
    assert labels["dag_id"] == "nightly_build" and labels["task_id"] == "build" and labels["try_number"] == "1"
    assert labels["kubernetes_pod_operator"] == "True" and labels["run_id"]
    assert labels["llm-release/model"] == "llama3" and labels["llm-release/version"] == "4"


def test_an_oom_killed_build_fails_at_once_saying_so_and_its_pod_is_deleted(k8s):
    from llm_release_airflow.retry_policy import PermanentTaskError

    k8s.on_create(lambda manifest: PodScript.oom_killed(pending_s=0.05, running_s=0.2, logs=BUILD_LOG[:1]))

    with pytest.raises(PermanentTaskError, match=r"OOMKilled, exit code 137 \(pod phase Failed\)") as caught:
        run(make_operator())

    assert "resources.limits.memory" in str(caught.value)
    assert "remote_pod" not in str(caught.value)  # a sentence, not the provider's dump of the pod
    name = k8s.created[0]["metadata"]["name"]
    assert k8s.deleted == [name] and not k8s.exists(name)
    assert k8s.count("PATCH") == 1  # marked already_checked first: a retry will not reattach to it


def test_a_failed_build_step_is_retried_and_names_the_containers_ending(k8s):
    from airflow.sdk.exceptions import AirflowFailException

    from llm_release_airflow.operators.build import BuildPodFailed

    k8s.on_create(lambda manifest: PodScript(pending_s=0.05, running_s=0.15, exit_code=1,
                                             logs=("step 'trtllm-build' failed with exit code 1",)))
    with pytest.raises(BuildPodFailed, match=r"Error, exit code 1 \(pod phase Failed\)") as caught:
        run(make_operator())
    assert not isinstance(caught.value, AirflowFailException)  # transient: Airflow retries it
    assert not k8s.exists(k8s.created[0]["metadata"]["name"])


def test_an_unschedulable_pod_hits_the_startup_timeout_with_the_schedulers_reason(k8s):
    from llm_release_airflow.operators.build import BuildPodFailed

    k8s.on_create(lambda manifest: PodScript.unschedulable_gpus(nodes=4))
    with pytest.raises(BuildPodFailed) as caught:
        run(make_operator(startup_timeout_seconds=1))

    message = str(caught.value)
    assert "did not start within 1 s (phase Pending)" in message
    assert "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu" in message
    name = k8s.created[0]["metadata"]["name"]
    assert k8s.deleted == [name] and not k8s.exists(name)


def test_the_result_is_read_from_the_log_tail_when_the_log_is_not_streamed(k8s):
    k8s.on_create(lambda manifest: PodScript(pending_s=0.05, running_s=0.2, logs=(*BUILD_LOG, result_line())))
    result, _ = run(make_operator(get_logs=False))
    assert result["engine_dir"] == "/engines/llama3/4" and result["gpu_arch"] == "sm90"
    assert k8s.count("GET", what="log") == 1


def test_a_retry_reattaches_to_the_pod_its_predecessor_left_running(k8s):
    """The worker of try 1 died after creating the pod: try 2 finds it by its labels and follows it."""
    from kubernetes.client import ApiClient

    k8s.on_create(lambda manifest: PodScript(pending_s=0.05, running_s=0.6, logs=(*BUILD_LOG, result_line())))
    first = make_operator()
    context = {"ti": _TI(try_number=1), "run_id": RUN_ID, "dag": first.dag, "task": first,
               "params": {"model": "llama3", "version": 4, "build_params": PARAMS}}
    first.render_template_fields(context)
    left_behind = first.build_pod_request_obj(context)
    first.client.create_namespaced_pod(NS, ApiClient().sanitize_for_serialization(left_behind))

    result, _ = run(make_operator(), ti=_TI(try_number=2))

    assert result["model"] == "llama3" and len(k8s.created) == 1  # no second pod
    assert k8s.deleted == [left_behind.metadata.name]


BAD_INPUT = [
    ({"build_params": {**PARAMS, "tp_size": 4, "pp_size": 4}}, "build_params.tp_size"),
    ({"build_params": {**PARAMS, "max_input_len": 2048, "max_seq_len": 2048}}, "build_params.max_seq_len"),
    ({"build_params": {**PARAMS, "precision": "fp7"}}, "build_params.precision"),
    ({"build_params": {**PARAMS, "max_batch": 8}}, "build_params.max_batch"),
    ({"model": "llama3;reboot"}, "model"),
    ({"model": "$(reboot)"}, "model"),
    ({"checkpoint": "llama-3/$(reboot)"}, "checkpoint"),
    ({"checkpoint": "/checkpoints/llama;rm -rf /"}, "checkpoint"),
    ({"checkpoint": "/etc/passwd-dir"}, "checkpoint"),
    ({"engine_dir": "/tmp/engines/llama3/4"}, "engine_dir"),
    ({"labels": {"team": "llm builds"}}, "labels"),
    ({"model_family": "gpt-neox"}, "model_family"),
    ({"image": "registry.example.com/llm-release-build:latest"}, "image"),
    ({"namespace": "LLM_Builds"}, "namespace"),
    ({"gpus_per_node": 0}, "gpus_per_node"),
    ({"resources": {"limits": {"nvidia.com/gpu": "8"}}}, "resources.limits.nvidia.com/gpu"),
    ({"resources": {"limits": {"memory": "lots"}}}, "resources.limits.memory"),
    ({"timeout": 5}, "timeout"),
    ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"}]}, "tolerations"),
]


@pytest.mark.parametrize("overrides, field", BAD_INPUT, ids=[f for _, f in BAD_INPUT])
def test_bad_input_is_refused_before_any_pod_exists_naming_the_argument(k8s, overrides, field):
    from llm_release_airflow.retry_policy import PermanentTaskError

    with pytest.raises(PermanentTaskError, match="permanent: SpecError") as caught:
        run(make_operator(**{"version": 4, "model": "llama3", "build_params": PARAMS, **overrides}))
    cause = caught.value.__cause__
    assert isinstance(cause, SpecError) and cause.field == field, cause
    assert k8s.created == [] and k8s.requests == []  # not even a LIST: nothing was asked of the cluster


def test_container_shaping_arguments_and_deferrable_mode_are_refused_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="cmds"):
        make_operator(cmds=["bash", "-c", "rm -rf /"])
    with pytest.raises(ValueError, match="not deferrable"):
        make_operator(deferrable=True)


def test_the_operator_is_registered_with_the_retry_rule_and_real_template_fields():
    from llm_release_airflow.operators.build import TRTLLMBuildOperator
    from llm_release_airflow.provider_info import get_provider_info
    from llm_release_airflow.retry_policy import ReleaseOperator

    (operators,) = get_provider_info()["operators"]
    assert "llm_release_airflow.operators.build" in operators["python-modules"]

    operator = make_operator()
    assert issubclass(TRTLLMBuildOperator, ReleaseOperator) and operator.retries == 3
    assert getattr(TRTLLMBuildOperator.execute, "_llm_release_fail_fast", False)
    assert [f for f in TRTLLMBuildOperator.template_fields if not hasattr(operator, f)] == []
    assert operator.on_finish_action.value == "delete_pod" and operator.get_logs and not operator.deferrable


def test_the_double_answers_as_the_api_server_does_where_the_provider_relies_on_it(k8s):
    """What the operator's tests lean on: duplicate names, logs of a waiting container, auth."""
    from kubernetes.client import ApiClient, Configuration, CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config import load_kube_config_from_dict

    def api(token=None):
        config = Configuration()
        load_kube_config_from_dict(k8s.kubeconfig(namespace=NS, token=token), client_configuration=config)
        return CoreV1Api(ApiClient(config))

    k8s.on_create(lambda manifest: PodScript(pending_s=5, running_s=1))
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "build", "image": "img:1"}]}}
    created = api().create_namespaced_pod(NS, body)
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"  # the server's default
    refusals = [
        (lambda: api().create_namespaced_pod(NS, body), 409, "AlreadyExists"),
        (lambda: api().read_namespaced_pod_log("p", NS, container="build"), 400, "is waiting to start"),
        (lambda: api().read_namespaced_pod_log("p", NS, container="base"), 400, "not valid for pod p"),
        (lambda: api().list_namespaced_pod(NS, field_selector="spec.image=x"), 400, "not a known field selector"),
        (lambda: api(token="stolen").read_namespaced_pod("p", NS), 401, "Unauthorized"),
        (lambda: api().read_namespaced_pod("q", NS), 404, 'pods \\"q\\" not found'),
    ]
    for call, status, text in refusals:
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == status and text in caught.value.body
    bad = {**body, "metadata": {"name": "Bad_Name"}}
    with pytest.raises(ApiException) as caught:
        api().create_namespaced_pod(NS, bad)
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert caught.value.status == 422 and causes[0]["field"] == "metadata.name"
