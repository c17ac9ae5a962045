"""The provenance gate on the session stack: an engine built for an H100 in a TensorRT-LLM image
is refused by sync and by load before Triton sees it; a matching one is installed and loads.

The engines are reference engines whose metadata.json is rewritten to say where they were
"built" (the rest of the engine is untouched, so the files still verify): Triton itself would
load them happily on this CPU, which is what makes "not READY" prove the gate stopped them.
"""

from __future__ import annotations

import dataclasses

import pytest

from llm_release.artifacts.publish import publish_engine
from llm_release.artifacts.sync import FAILED, INSTALL, SyncOptions, raise_for_report, run_sync
from llm_release.environments import EnvironmentSet
from llm_release.errors import ArtifactError, ProvenanceMismatch, TritonError, is_permanent
from llm_release.metadata import read_metadata, write_metadata
from llm_release.model_repo import install_version, installed_versions
from llm_release.provenance import read_runtime_info
from llm_release.stack.local import local_environments

PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 64}
IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(model, version, gpu_arch) -> a reference engine dir whose metadata says gpu_arch (and,
    for a GPU, the TensorRT-LLM image and version)."""
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint

    root = tmp_path_factory.mktemp("provenance")
    ckpt = make_reference_checkpoint(root / "ckpt", seed=5)

    def _build(model: str, version: int, gpu_arch: str = "cpu"):
        out = root / f"{model}-v{version}-{gpu_arch}"
        if not out.exists():
            build_engine(ckpt, out, PARAMS, model_name=model, version=version)
            if gpu_arch != "cpu":
                meta = read_metadata(out)
                write_metadata(out, dataclasses.replace(meta, gpu_arch=gpu_arch, triton_image=IMAGE,
                                                        trtllm_version="1.0.0"))
        return out

    return _build


@pytest.fixture()
def store(s3_store):
    return s3_store


@pytest.fixture(scope="module")
def metrics_url(stack):
    return stack["components"]["triton"]["metrics_url"]


def states(triton, model):
    return {v: state for v, (state, _) in triton.version_states(model).items()}


def test_the_local_runtime_reads_as_cpu(urls, metrics_url):
    runtime = read_runtime_info(urls["triton"], metrics_url=metrics_url)
    assert (runtime.gpu_arch, runtime.image, runtime.trtllm_version) == ("cpu", None, None)
    assert runtime.triton_version and runtime.triton_version[0].isdigit()
    assert "show no GPU" in runtime.sources["gpu_arch"]
    declared = read_runtime_info(urls["triton"], metrics_url=metrics_url,
                                 declared={"gpu_arch": "sm90", "image": IMAGE, "trtllm_version": "1.0.0"})
    assert (declared.gpu_arch, declared.image, declared.trtllm_version) == ("sm90", IMAGE, "1.0.0")
    assert read_runtime_info(urls["triton"]).gpu_arch is None  # metrics not read: unknown, never guessed
    with pytest.raises(TritonError) as err:
        read_runtime_info("http://127.0.0.1:9", metrics_url=metrics_url)
    assert not is_permanent(err.value)


def test_sync_refuses_a_mismatched_version_before_installing_it(stack, store, build, triton, urls, metrics_url,
                                                                tmp_path):
    publish_engine(build("prov_sync", 1), store)
    publish_engine(build("prov_sync", 2, "sm90"), store)
    repo = stack["model_repository"]
    runtime = read_runtime_info(urls["triton"], metrics_url=metrics_url)
    report = run_sync(store, repo, SyncOptions(models=("prov_sync",)), triton=triton, runtime=runtime)
    by_version = {a.version: a for a in report.actions}
    assert by_version[1].kind == INSTALL
    refused = by_version[2]
    assert refused.kind == FAILED and refused.bytes == 0
    assert "gpu_arch" in refused.reason and "sm90" in refused.reason and "cpu" in refused.reason
    assert installed_versions(repo, "prov_sync") == [1]
    assert report.loaded == {"prov_sync": [1]}
    assert states(triton, "prov_sync") == {1: "READY"}
    with pytest.raises(ArtifactError, match="prov_sync v2"):
        raise_for_report(report)
    # without a runtime nothing is checked, as before the gate existed (into a scratch repository)
    unchecked = run_sync(store, tmp_path / "repo", SyncOptions(models=("prov_sync",)))
    assert {a.version: a.kind for a in unchecked.actions} == {1: INSTALL, 2: INSTALL}
    triton.unload_versions("prov_sync", [1])


def test_load_refuses_a_mismatched_version_before_triton_sees_it(stack, build, triton, metrics_url):
    repo = stack["model_repository"]
    install_version(build("prov_load", 1, "sm90"), repo)
    install_version(build("prov_load", 2), repo)
    docs = local_environments(stack["state"])
    for doc in docs:
        doc["triton"]["runtime"] = {"metrics_url": metrics_url}
    env = EnvironmentSet.from_doc(docs).get("staging")
    served = env.served_versions()
    with pytest.raises(ProvenanceMismatch) as err:
        served.load("prov_load", 1)
    assert (err.value.field, err.value.engine, err.value.runtime) == ("gpu_arch", "sm90", "cpu")
    assert "build the engine for cpu or load it on sm90 nodes" in str(err.value)
    assert "READY" not in states(triton, "prov_load").values()  # Triton was never asked
    assert served.load("prov_load", 2) == [2]  # the matching one loads
    assert states(triton, "prov_load").get(2) == "READY"
    served.unload("prov_load", 2)


def test_model_per_release_gates_the_release_model(stack, build, triton, metrics_url):
    repo = stack["model_repository"]
    install_version(build("prov_rel", 3, "sm90"), repo, model_name="prov_rel_r3", version=1)
    install_version(build("prov_rel", 4), repo, model_name="prov_rel_r4", version=1)
    docs = local_environments(stack["state"])
    for doc in docs:
        doc["triton"].update(topology="model_per_release", runtime={"metrics_url": metrics_url})
    served = EnvironmentSet.from_doc(docs).get("staging").served_versions()
    with pytest.raises(ProvenanceMismatch):
        served.load("prov_rel", 3)
    assert "READY" not in states(triton, "prov_rel_r3").values()
    assert served.load("prov_rel", 4) == [4]
    served.unload("prov_rel", 4)
