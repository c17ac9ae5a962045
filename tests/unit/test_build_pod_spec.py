"""The build Pod manifest: GPUs, volumes, command, deadline; settings refused by name."""

import json

import pytest

from llm_release.build.pod import PodSettings, build_pod_manifest, check_gpu_request
from llm_release.build.trtllm import TrtllmBuildRequest
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError

DIGEST = "sha256:" + "ab" * 32
SETTINGS = {"namespace": "llm-builds", "image": f"registry.example.com/llm-release-build@{DIGEST}",
            "checkpoint_pvc": "checkpoints", "engine_pvc": "engines"}
REQUEST = {"model": "llama3_8b", "version": 7, "model_family": "llama",
           "checkpoint_dir": "/checkpoints/llama3-8b", "engine_dir": "/engines/llama3_8b/7",
           "params": {"precision": "fp16", "max_batch_size": 8, "max_input_len": 1024,
                      "max_seq_len": 2048, "tp_size": 2, "pp_size": 2},
           "examples_dir": "/app/tensorrt_llm/examples",
           "image": "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"}


def manifest(request=None, **settings):
    req = TrtllmBuildRequest.from_dict(request or REQUEST)
    return build_pod_manifest(req, PodSettings(**{**SETTINGS, **settings}), name="build-llama3-8b-v7")


def test_pod_shape():
    pod = manifest()
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["name"] == "build-llama3-8b-v7"
    assert pod["metadata"]["namespace"] == "llm-builds"
    assert pod["metadata"]["labels"]["llm-release/model"] == "llama3_8b"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 4 * 3600
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    (container,) = spec["containers"]
    assert container["image"] == SETTINGS["image"]
    resources = container["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "4"
    assert resources["requests"]["memory"] == "64Gi"
    assert resources["limits"]["memory"] == "128Gi"
    json.dumps(pod)  # a plain, serializable dict


def test_command_is_one_argv_element_of_json_that_round_trips():
    pod = manifest()
    command = pod["spec"]["containers"][0]["command"]
    assert command[:4] == ["llm-release", "engine", "build-trtllm", "--request"]
    assert len(command) == 5
    assert TrtllmBuildRequest.from_dict(json.loads(command[4])) == \
        TrtllmBuildRequest.from_dict(REQUEST)


def test_volumes_checkpoint_read_only_engine_writable_shm_in_memory():
    pod = manifest()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "checkpoints",
                                                               "readOnly": True}
    assert volumes["engines"]["persistentVolumeClaim"] == {"claimName": "engines"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/checkpoints"]["readOnly"] is True
    assert not mounts["/engines"].get("readOnly")
    assert mounts["/dev/shm"]["name"] == "dshm"


def test_one_pvc_for_both_is_one_volume_mounted_twice():
    pod = manifest(engine_pvc="checkpoints")
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["data", "dshm"]
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert [(m["name"], m["mountPath"], m.get("readOnly", False)) for m in mounts] == [
        ("data", "/checkpoints", True), ("data", "/engines", False), ("dshm", "/dev/shm", False)]


def test_env_names_the_serving_image_and_keeps_the_hub_offline():
    env = {e["name"]: e["value"] for e in manifest()["spec"]["containers"][0]["env"]}
    assert env["LLM_RELEASE_TRITON_IMAGE"] == REQUEST["image"]
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    without = {**REQUEST, "image": None}
    env = {e["name"] for e in manifest(without)["spec"]["containers"][0]["env"]}
    assert "LLM_RELEASE_TRITON_IMAGE" not in env


def test_optional_settings_appear_when_set():
    pod = manifest(service_account="builder", image_pull_secrets=["ngc"], cpu_limit="16",
                   labels={"team": "llm"}, active_deadline_s=600)
    assert pod["spec"]["serviceAccountName"] == "builder"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ngc"}]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "16"
    assert pod["metadata"]["labels"]["team"] == "llm"
    assert pod["spec"]["activeDeadlineSeconds"] == 600


def test_tags_accepted_digests_accepted_mutable_refused():
    PodSettings(**{**SETTINGS, "image": "registry.example.com/llm-release-build:25.10"})
    for image in ("registry.example.com/llm-release-build:latest",
                  "registry.example.com/llm-release-build"):
        with pytest.raises(SpecError) as err:
            PodSettings(**{**SETTINGS, "image": image})
        assert err.value.field == "image"
    with pytest.raises(SpecError, match="not pinned by digest"):
        PodSettings(**{**SETTINGS, "image": "r.example.com/b:25.10", "require_digest": True})


@pytest.mark.parametrize("changes, field", [
    ({"namespace": "LLM_builds"}, "namespace"),
    ({"namespace": "x" * 64}, "namespace"),
    ({"checkpoint_pvc": "Checkpoints"}, "checkpoint_pvc"),
    ({"engine_pvc": "engines;rm"}, "engine_pvc"),
    ({"image": "registry/x:25.10; rm -rf /"}, "image"),
    ({"checkpoint_mount": "checkpoints"}, "checkpoint_mount"),
    ({"engine_mount": "/dev/shm"}, "engine_mount"),
    ({"engine_mount": "/checkpoints/engines"}, "engine_mount"),
    ({"memory_request": "64GB"}, "memory_request"),
    ({"cpu_request": "eight"}, "cpu_request"),
    ({"memory_limit": "32Gi"}, "memory_limit"),
    ({"shm_size": "-1Gi"}, "shm_size"),
    ({"node_selector": {"nvidia.com/gpu.product": "H100 80GB"}}, "node_selector"),
    ({"labels": {"-bad": "x"}}, "labels"),
    ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Maybe"}]}, "tolerations"),
    ({"tolerations": [{"key": "k", "effect": "Never"}]}, "tolerations"),
    ({"service_account": "Builder"}, "service_account"),
    ({"active_deadline_s": 0}, "active_deadline_s"),
    ({"active_deadline_s": "3600"}, "active_deadline_s"),
    ({"image_pull_secrets": "ngc"}, "image_pull_secrets"),
    ({"gpus_per_node": 0}, "gpus_per_node"),
])
def test_bad_settings_name_the_field(changes, field):
    with pytest.raises(SpecError) as err:
        PodSettings(**{**SETTINGS, **changes})
    assert err.value.field == field


def test_tp_pp_beyond_a_node_refused_naming_tp_size():
    with pytest.raises(SpecError) as err:
        manifest(gpus_per_node=2)
    assert err.value.field == "tp_size"
    assert "4 GPUs" in str(err.value)
    params = BuildParams(precision="fp16", max_batch_size=1, max_input_len=8, max_seq_len=16,
                         tp_size=8, pp_size=2)
    with pytest.raises(SpecError):
        check_gpu_request(params, 8)
    assert check_gpu_request(params, 16) == 16


@pytest.mark.parametrize("changes, field", [
    ({"checkpoint_dir": "/data/llama"}, "checkpoint_dir"),
    ({"engine_dir": "/data/engines/7"}, "engine_dir"),
    ({"calib_dataset": "/tmp/calib"}, "calib_dataset"),
])
def test_paths_must_live_on_the_pod_volumes(changes, field):
    with pytest.raises(SpecError) as err:
        manifest({**REQUEST, **changes})
    assert err.value.field == field


def test_pod_name_checked():
    req = TrtllmBuildRequest.from_dict(REQUEST)
    with pytest.raises(SpecError) as err:
        build_pod_manifest(req, PodSettings(**SETTINGS), name="Build_7")
    assert err.value.field == "name"
