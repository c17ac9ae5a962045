"""The provenance gate: an engine is refused where it cannot run, naming the field and both values.

Reading the runtime from a live Triton is covered by tests/integration/test_provenance_gate.py.
"""

from __future__ import annotations

import pytest

from llm_release.environments import EnvironmentSet, TritonRuntime
from llm_release.errors import ModelNotFound, ProvenanceMismatch, SpecError, is_permanent
from llm_release.metadata import EngineMetadata, write_metadata
from llm_release.provenance import (RuntimeInfo, check_declared, check_provenance, image_identity,
                                    normalize_gpu_arch)
from llm_release.serving import DeploymentPerVersion, ModelPerRelease, PlainVersions
from llm_release.triton_control import TritonControl

IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"
H100 = RuntimeInfo(image=IMAGE, trtllm_version="1.0.0", gpu_arch="sm90", triton_version="2.62.0")
CPU = RuntimeInfo(image=None, trtllm_version=None, gpu_arch="cpu")
# Nothing listens on port 9: a request to Triton would raise a (transient) TritonError instead.
NOWHERE = "http://127.0.0.1:9"


def engine(**overrides) -> EngineMetadata:
    fields = dict(model="llama", version=4, precision="fp16", max_batch_size=8, max_input_len=512,
                  max_seq_len=1024, tp_size=1, pp_size=1, gpu_arch="sm90", builder="trtllm-build",
                  trtllm_version="1.0.0", triton_image=IMAGE, build_params={},
                  source_checkpoint_digest="sha256:" + "b" * 64, created_at="2026-01-31T12:00:00Z")
    fields.update(overrides)
    return EngineMetadata(**fields)


def reference_engine(**overrides) -> EngineMetadata:
    return engine(gpu_arch="cpu", builder="reference-numpy", trtllm_version=None, triton_image=None, **overrides)


def test_a_matching_runtime_passes():
    check_provenance(engine(), H100)
    check_provenance(reference_engine(), CPU)
    # the same image from a mirror, the SM spelled differently, a leading v on the version
    check_provenance(engine(gpu_arch="SM_90", trtllm_version="v1.0.0"),
                     RuntimeInfo(image="mirror.example.com/ngc/tritonserver:25.10-trtllm-python-py3",
                                 trtllm_version="1.0.0", gpu_arch="9.0"))


def test_an_engine_that_records_no_toolchain_does_not_constrain_it():
    check_provenance(reference_engine(), RuntimeInfo(image=IMAGE, trtllm_version="1.1.0", gpu_arch="cpu"))


@pytest.mark.parametrize("meta, runtime, field, engine_value, runtime_value, fix", [
    (engine(), RuntimeInfo(IMAGE, "1.0.0", "sm80"), "gpu_arch", "sm90", "sm80",
     "build the engine for sm80 or load it on sm90 nodes"),
    (engine(), CPU, "gpu_arch", "sm90", "cpu", "build the engine for cpu or load it on sm90 nodes"),
    (reference_engine(), H100, "gpu_arch", "cpu", "sm90", "build the engine for sm90 or load it on cpu nodes"),
    (engine(), RuntimeInfo("nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3", "1.0.0", "sm90"), "triton_image",
     IMAGE, "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3",
     "rebuild the engine in nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3 or serve it from " + IMAGE),
    (engine(), RuntimeInfo("nvcr.io/nvidia/tritonserver:25.10-py3", "1.0.0", "sm90"), "triton_image",
     IMAGE, "nvcr.io/nvidia/tritonserver:25.10-py3", None),
    (engine(), RuntimeInfo(IMAGE, "1.1.0", "sm90"), "trtllm_version", "1.0.0", "1.1.0",
     "rebuild the engine with TensorRT-LLM 1.1.0 or serve it from an image with TensorRT-LLM 1.0.0"),
], ids=["sm90-on-sm80", "gpu-on-cpu", "cpu-on-gpu", "image-tag", "image-flavour", "trtllm"])
def test_each_mismatch_names_the_field_and_both_values(meta, runtime, field, engine_value, runtime_value, fix):
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(meta, runtime)
    exc = err.value
    assert exc.field == field
    assert (exc.engine, exc.runtime) == (engine_value, runtime_value)
    assert engine_value in str(exc) and runtime_value in str(exc)
    assert str(exc).startswith(f"{field}: llama v4")
    if fix:
        assert str(exc).endswith(fix)
    assert isinstance(exc, SpecError) and is_permanent(exc)


def test_the_message_reads_like_the_runbook():
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(engine(), RuntimeInfo(IMAGE, "1.0.0", "sm80", triton_version="2.62.0"))
    assert str(err.value) == ("gpu_arch: llama v4: the engine was built for sm90 but the runtime is sm80 "
                              "(Triton 2.62.0); build the engine for sm80 or load it on sm90 nodes")


@pytest.mark.parametrize("runtime, field", [
    (RuntimeInfo(IMAGE, "1.0.0", None), "gpu_arch"),
    (RuntimeInfo(None, "1.0.0", "sm90"), "image"),
    (RuntimeInfo(IMAGE, None, "sm90"), "trtllm_version"),
])
def test_a_runtime_that_cannot_tell_a_recorded_value_is_refused(runtime, field):
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(engine(), runtime)
    assert str(err.value).endswith(f"declare runtime.{field} in the environment")
    assert "does not say" in str(err.value)
    assert err.value.runtime is None and err.value.engine


def test_normalizing_and_image_identity():
    assert [normalize_gpu_arch(v) for v in ("sm90", "SM_90", "90", "9.0", "sm_100a", "CPU")] == [
        "sm90", "sm90", "sm90", "sm90", "sm100a", "cpu"]
    assert image_identity(IMAGE) == ("tritonserver", "25.10-trtllm-python-py3", None)
    assert image_identity("tritonserver") == ("tritonserver", "latest", None)
    assert image_identity("localhost:5000/tritonserver:25.10-trtllm-python-py3@sha256:" + "c" * 64)[2] \
        == "sha256:" + "c" * 64


@pytest.mark.parametrize("doc, field", [
    ({"gpu_arch": "hopper"}, "triton.runtime.gpu_arch"),
    ({"image": "tritonserver"}, "triton.runtime.image"),
    ({"trtllm_version": "latest"}, "triton.runtime.trtllm_version"),
    ({"gpu_arch": ""}, "triton.runtime.gpu_arch"),
])
def test_declared_values_are_validated_and_named(doc, field):
    with pytest.raises(SpecError) as err:
        check_declared(doc, "triton.runtime")
    assert err.value.field == field


def env_doc(runtime=None, topology="versions", **triton):
    doc = {"name": "production", "region": "eu",
           "triton": {"url": "http://triton:8000", "topology": topology, "model_repository": "/repo", **triton},
           "router": {"kind": "envoy", "admin_url": "http://envoy:9901", "control_plane_url": "http://xds:18090"},
           "prometheus_url": "http://prometheus:9090"}
    if runtime is not None:
        doc["triton"]["runtime"] = runtime
    return doc


def test_the_environment_declares_its_runtime_and_round_trips():
    declared = {"image": IMAGE, "trtllm_version": "1.0.0", "gpu_arch": "SM_90",
                "metrics_url": "http://triton:8002/metrics"}
    env = EnvironmentSet.from_doc([env_doc(declared)]).get("production")
    assert env.triton.runtime == TritonRuntime(image=IMAGE, trtllm_version="1.0.0", gpu_arch="sm90",
                                               metrics_url="http://triton:8002/metrics")
    again = EnvironmentSet.from_doc(EnvironmentSet([env]).to_list()).get("production")
    assert again == env
    assert "runtime" not in EnvironmentSet.from_doc([env_doc()]).get("production").to_dict()["triton"]
    for bad, field in (({"gpu_arch": "volta"}, "gpu_arch"), ({"colour": "green"}, "colour"),
                       ({"metrics_url": "triton:8002"}, "metrics_url"), ({}, None)):
        with pytest.raises(SpecError) as err:
            EnvironmentSet.from_doc([env_doc(bad)])
        assert err.value.field.startswith("environments[0] (production/eu).triton.runtime")
        if field:
            assert err.value.field.endswith(f".{field}")


def test_served_versions_carry_the_gate_only_where_a_runtime_is_declared():
    plain = EnvironmentSet.from_doc([env_doc()]).get("production").served_versions()
    assert plain.runtime is None
    gated = EnvironmentSet.from_doc([env_doc({"gpu_arch": "sm90"}, topology="model_per_release")]) \
        .get("production").served_versions()
    assert isinstance(gated, ModelPerRelease) and callable(gated.runtime)
    per_deployment = EnvironmentSet.from_doc([env_doc({"gpu_arch": "sm90"}, topology="deployment_per_version",
                                                      deployments={"1": "http://a:8000", "2": "http://b:8000"})]) \
        .get("production").served_versions()
    assert isinstance(per_deployment, DeploymentPerVersion) and sorted(per_deployment.runtime) == [1, 2]


def install_metadata(repo, model, version, meta):
    (repo / model / str(version)).mkdir(parents=True)
    write_metadata(repo / model / str(version), meta)


def test_a_load_is_refused_before_triton_is_asked(tmp_path):
    install_metadata(tmp_path, "llama", 4, engine())
    served = PlainVersions(TritonControl(NOWHERE, model_repository=str(tmp_path)), runtime=CPU)
    with pytest.raises(ProvenanceMismatch) as err:
        served.load("llama", 4)
    assert (err.value.field, err.value.engine, err.value.runtime) == ("gpu_arch", "sm90", "cpu")
    # the model-per-release ensemble carries the engine's metadata.json (llm_release.trtllm_repo)
    install_metadata(tmp_path, "llama_r4", 1, engine())
    per_release = ModelPerRelease(TritonControl(NOWHERE, model_repository=str(tmp_path)),
                                  runtime=lambda: RuntimeInfo(IMAGE, "1.1.0", "sm90"))
    with pytest.raises(ProvenanceMismatch) as err:
        per_release.load("llama", 4)
    assert err.value.field == "trtllm_version"
    per_deployment = DeploymentPerVersion({4: TritonControl(NOWHERE, model_repository=str(tmp_path))},
                                          runtime={4: RuntimeInfo(IMAGE, "1.0.0", "sm80")})
    with pytest.raises(ProvenanceMismatch):
        per_deployment.load("llama", 4)


def test_a_gate_that_cannot_read_the_repository_refuses(tmp_path):
    served = PlainVersions(TritonControl(NOWHERE), runtime=H100)  # no model_repository
    with pytest.raises(SpecError) as err:
        served.load("llama", 4)
    assert err.value.field == "triton.model_repository"
    unknown = PlainVersions(TritonControl(NOWHERE, model_repository=str(tmp_path)), runtime=H100)
    with pytest.raises(ModelNotFound) as err:
        unknown.load("llama", 4)  # not installed: the load's own message, before the gate reads anything
    assert "llama: no version directory for [4]" in str(err.value) and "install the engine first" in str(err.value)


def test_a_release_with_no_compiled_engine_runs_on_any_gpu_but_still_in_its_image():
    llm_api = engine(gpu_arch="any", builder="llm-api", trtllm_version=None)
    check_provenance(llm_api, H100)
    check_provenance(llm_api, RuntimeInfo(image=IMAGE, trtllm_version=None, gpu_arch="sm80"))
    with pytest.raises(ProvenanceMismatch) as err:
        check_provenance(llm_api, RuntimeInfo(image="nvcr.io/nvidia/tritonserver:26.03-trtllm-python-py3",
                                              trtllm_version="1.2.0", gpu_arch="sm90"))
    assert err.value.field == "triton_image" and "25.10" in str(err.value) and "26.03" in str(err.value)
