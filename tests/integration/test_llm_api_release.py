"""An LLM-API release (checkpoint + model config, no compiled engine) goes through the same
publish and sync as an engine: packaged atomically with metadata.json, published immutably,
installed verified, and bound to no GPU architecture."""

from __future__ import annotations


import pytest
import yaml

from llm_release.artifacts.publish import publish_engine
from llm_release.artifacts.sync import SyncOptions, run_sync
from llm_release.build.backends import build_locally
from llm_release.engine.checkpoint import checkpoint_digest, make_reference_checkpoint
from llm_release.errors import SpecError
from llm_release.metadata import verify_engine
from llm_release.provenance import RuntimeInfo, check_provenance

PARAMS = {"precision": "bf16", "max_batch_size": 16, "max_input_len": 2048, "max_seq_len": 4096, "tp_size": 2,
          "max_num_tokens": 8192}


@pytest.fixture()
def store(s3_store):
    return s3_store


def test_an_llm_api_release_is_packaged_published_and_synced_like_an_engine(store, tmp_path):
    checkpoint = make_reference_checkpoint(tmp_path / "hf", seed=4)
    out = tmp_path / "release"
    meta = build_locally("llm_api", checkpoint=str(checkpoint), engine_dir=str(out), params=PARAMS, model="chat_lm",
                         version=3)
    assert (meta.builder, meta.gpu_arch, meta.tp_size) == ("llm-api", "any", 2)
    assert meta.source_checkpoint_digest == checkpoint_digest(checkpoint)
    config = yaml.safe_load((out / "model.yaml").read_text())
    assert config == {"backend": "pytorch", "model": "checkpoint", "dtype": "bfloat16", "tensor_parallel_size": 2,
                      "pipeline_parallel_size": 1, "max_batch_size": 16, "max_input_len": 2048, "max_seq_len": 4096,
                      "max_num_tokens": 8192}
    assert verify_engine(out) == meta
    # a retry is a no-op; other parameters into the same directory are refused
    assert build_locally("llm_api", checkpoint=str(checkpoint), engine_dir=str(out), params=PARAMS, model="chat_lm",
                         version=3) == meta
    with pytest.raises(SpecError) as err:
        build_locally("llm_api", checkpoint=str(checkpoint), engine_dir=str(out), params={**PARAMS, "tp_size": 4},
                      model="chat_lm", version=3)
    assert err.value.field == "out_dir"

    assert publish_engine(out, store).uploaded
    repo = tmp_path / "repo"
    repo.mkdir()
    report = run_sync(store, repo, SyncOptions(), runtime=RuntimeInfo(image=None, trtllm_version=None, gpu_arch="sm80"))
    assert not report.failed, report.summary()
    installed = verify_engine(repo / "chat_lm" / "3")
    assert installed.files == meta.files
    # the model directory's config.pbtxt is a valid Triton config of a decoupled Python model
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((repo / "chat_lm" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("chat_lm", "python", 0)
    assert config.model_transaction_policy.decoupled
    check_provenance(installed, RuntimeInfo(image=None, trtllm_version=None, gpu_arch="sm90"))  # any GPU


def test_an_llm_api_release_does_not_quantize(tmp_path):
    checkpoint = make_reference_checkpoint(tmp_path / "hf", seed=4)
    with pytest.raises(SpecError) as err:
        build_locally("llm_api", checkpoint=str(checkpoint), engine_dir=str(tmp_path / "o"),
                      params={**PARAMS, "precision": "fp8"}, model="chat_lm", version=1)
    assert err.value.field == "precision" and not (tmp_path / "o").exists()
