"""The TensorRT-LLM release repository: four models per release, wired and filled from metadata.json.

Every rendered config.pbtxt is parsed into Triton's own ModelConfig message (tritonclient), so a
field Triton does not know fails here rather than at load time on a GPU node.
"""

from __future__ import annotations

import os

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from llm_release.errors import SpecError
from llm_release.metadata import EngineMetadata
from llm_release.model_repo import metadata_of
from llm_release.serving import ModelPerRelease
from llm_release.triton_control import TritonControl
from llm_release.trtllm_repo import (BATCHING_STRATEGY, install_release_repository, kv_cache_fraction,
                                     release_names, render_release_repository)

ENGINE_DIR = "/models/engines/llama/7"
TOKENIZER_DIR = "/models/tokenizers/llama"


def meta(**overrides) -> EngineMetadata:
    fields = dict(model="llama", version=7, precision="fp16", max_batch_size=24, max_input_len=1024,
                  max_seq_len=2048, tp_size=1, pp_size=1, gpu_arch="sm90", builder="trtllm-build",
                  trtllm_version="1.0.0", triton_image="nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3",
                  build_params={"max_beam_width": 2}, source_checkpoint_digest="sha256:" + "a" * 64,
                  created_at="2026-01-31T12:00:00Z")
    fields.update(overrides)
    return EngineMetadata(**fields)


@pytest.fixture()
def python_models(tmp_path):
    root = tmp_path / "inflight_batcher_llm"
    for kind in ("preprocessing", "postprocessing"):
        (root / kind / "1").mkdir(parents=True)
        (root / kind / "1" / "model.py").write_text(f"# {kind} model of the image's TensorRT-LLM\n")
    return root


def render(python_models, m=None, **kwargs):
    return render_release_repository(m or meta(), engine_dir=ENGINE_DIR, tokenizer_dir=TOKENIZER_DIR,
                                     python_models_dir=python_models, **kwargs)


def configs(files) -> dict[str, model_config_pb2.ModelConfig]:
    """{model dir: ModelConfig} parsed strictly: an unknown field raises ParseError."""
    out = {}
    for rel, text in files.items():
        if rel.endswith("/config.pbtxt"):
            out[rel.split("/")[0]] = text_format.Parse(text, model_config_pb2.ModelConfig())
    return out


def param(config, key):
    return config.parameters[key].string_value


def test_names_follow_model_per_release_and_every_config_is_a_triton_model_config(python_models):
    files = render(python_models)
    served_name = ModelPerRelease(TritonControl("http://127.0.0.1:9")).name("llama", 7)
    assert served_name == "llama_r7"
    assert sorted(files) == sorted([
        "llama_r7/config.pbtxt", "llama_r7/1/metadata.json",
        "llama_preprocessing_r7/config.pbtxt", "llama_preprocessing_r7/1/model.py",
        "llama_tensorrt_llm_r7/config.pbtxt", "llama_tensorrt_llm_r7/1/metadata.json",
        "llama_postprocessing_r7/config.pbtxt", "llama_postprocessing_r7/1/model.py"])
    parsed = configs(files)
    assert {name: c.name for name, c in parsed.items()} == {name: name for name in parsed}
    assert parsed["llama_r7"].platform == "ensemble"
    assert parsed["llama_tensorrt_llm_r7"].backend == "tensorrtllm"
    assert parsed["llama_preprocessing_r7"].backend == parsed["llama_postprocessing_r7"].backend == "python"
    assert files["llama_preprocessing_r7/1/model.py"].startswith("# preprocessing")
    names = release_names("llama", 7)
    assert (names.ensemble, names.preprocessing, names.tensorrt_llm, names.postprocessing) == (
        "llama_r7", "llama_preprocessing_r7", "llama_tensorrt_llm_r7", "llama_postprocessing_r7")
    assert names.all()[-1] == "llama_r7"


def test_ensemble_wiring_matches_the_composing_models_step_by_step(python_models):
    parsed = configs(render(python_models))
    ensemble = parsed["llama_r7"]
    # ensemble tensor name -> data type, starting with the ensemble's inputs
    available = {t.name: t.data_type for t in ensemble.input}
    consumed = set()
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps] == ["llama_preprocessing_r7", "llama_tensorrt_llm_r7",
                                             "llama_postprocessing_r7"]
    for step in steps:
        assert step.model_version == 1
        composing = parsed[step.model_name]
        inputs = {t.name: t for t in composing.input}
        outputs = {t.name: t for t in composing.output}
        for key, tensor in step.input_map.items():
            assert key in inputs, f"{step.model_name} declares no input {key}"
            assert tensor in available, f"{step.model_name}.{key} reads {tensor}, which nothing produced yet"
            assert available[tensor] == inputs[key].data_type, f"{step.model_name}.{key}: type differs from {tensor}"
            consumed.add(tensor)
        required = {name for name, t in inputs.items() if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name}: required inputs not fed"
        for key, tensor in step.output_map.items():
            assert key in outputs, f"{step.model_name} declares no output {key}"
            assert tensor not in available, f"{tensor} produced twice"
            available[tensor] = outputs[key].data_type
    for out in ensemble.output:
        assert out.name in available and available[out.name] == out.data_type, out.name
    internal = {name for name in available if name.startswith("_")}
    assert internal <= consumed, f"produced but unused: {internal - consumed}"
    assert {t.name for t in ensemble.input} <= consumed
    required = {t.name for t in ensemble.input if not t.optional}
    assert required == {"text_input", "max_tokens"}
    assert "stream" in {t.name for t in ensemble.input}
    assert {t.name for t in ensemble.output} >= {"text_output"}


def test_values_come_from_metadata(python_models):
    parsed = configs(render(python_models))
    for config in parsed.values():
        assert config.max_batch_size == 24
    trt = parsed["llama_tensorrt_llm_r7"]
    assert param(trt, "gpt_model_path") == ENGINE_DIR
    assert param(trt, "gpt_model_type") == BATCHING_STRATEGY == "inflight_fused_batching"
    assert param(trt, "max_beam_width") == "2"
    assert list(trt.dynamic_batching.preferred_batch_size) == [24]
    assert param(parsed["llama_preprocessing_r7"], "tokenizer_dir") == TOKENIZER_DIR
    assert param(parsed["llama_postprocessing_r7"], "tokenizer_dir") == TOKENIZER_DIR
    assert trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    other = configs(render(python_models, meta(model="mistral", version=3, max_batch_size=4, build_params={})))
    assert set(other) == {"mistral_r3", "mistral_preprocessing_r3", "mistral_tensorrt_llm_r3",
                          "mistral_postprocessing_r3"}
    assert other["mistral_r3"].max_batch_size == 4
    assert param(other["mistral_tensorrt_llm_r3"], "max_beam_width") == "1"


def test_model_and_release_can_be_named_explicitly(python_models):
    files = render(python_models, model="chat", release=12)
    assert "chat_r12/config.pbtxt" in files
    assert [s.model_name for s in configs(files)["chat_r12"].ensemble_scheduling.step] == [
        "chat_preprocessing_r12", "chat_tensorrt_llm_r12", "chat_postprocessing_r12"]


def test_decoupled_by_default_because_we_stream(python_models):
    assert configs(render(python_models))["llama_tensorrt_llm_r7"].model_transaction_policy.decoupled is True
    assert configs(render(python_models, decoupled=False))[
        "llama_tensorrt_llm_r7"].model_transaction_policy.decoupled is False


def simulate_loads(k: int, fraction: float, free: float, weights: float) -> list[float]:
    """Free memory after each of k engines loads: weights first, then KV = fraction of what is left."""
    left, after = free, []
    for _ in range(k):
        assert left >= weights, "the next engine's weights do not fit"
        left -= weights
        left -= fraction * left
        after.append(left)
    return after


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("headroom", [0.0, 0.05, 0.1, 0.25])
def test_kv_fraction_leaves_room_for_every_resident_release(k, headroom):
    f = kv_cache_fraction(k, headroom)
    assert f <= (1 - headroom) / k
    assert f == pytest.approx((1 - headroom) / k, abs=1e-4)
    # Weightless engines: what stays free after k loads is at least the headroom.
    assert simulate_loads(k, f, 100.0, 0.0)[-1] >= headroom * 100.0 - 1e-9
    # With weights: the KV caches together never take more than (1 - headroom) of what was free.
    free, weights = 100.0, 10.0
    kv_total = free - k * weights - simulate_loads(k, f, free, weights)[-1]
    assert kv_total <= (1 - headroom) * free + 1e-9


def test_kv_fraction_default_is_for_two_releases(python_models):
    assert kv_cache_fraction() == 0.45
    assert kv_cache_fraction(1, 0.1) == 0.9  # one engine alone: the backend's own default
    # 0.9 for each of two would leave the second almost nothing; ours leaves both a fair share
    first_alone = simulate_loads(1, 0.9, 100.0, 0.0)[-1]
    assert first_alone == pytest.approx(10.0)
    assert simulate_loads(2, 0.45, 100.0, 0.0) == pytest.approx([55.0, 30.25])
    trt = configs(render(python_models))["llama_tensorrt_llm_r7"]
    assert param(trt, "kv_cache_free_gpu_mem_fraction") == "0.45"
    trt3 = configs(render(python_models, releases_resident=3, headroom=0.1))["llama_tensorrt_llm_r7"]
    assert param(trt3, "kv_cache_free_gpu_mem_fraction") == "0.3"
    capped = configs(render(python_models, max_tokens_in_paged_kv_cache=65536))["llama_tensorrt_llm_r7"]
    assert param(capped, "max_tokens_in_paged_kv_cache") == "65536"
    assert "max_tokens_in_paged_kv_cache" not in trt.parameters


def test_paths_are_absolute(python_models):
    for field, kwargs in (("engine_dir", {"engine_dir": "engines/llama/7", "tokenizer_dir": TOKENIZER_DIR}),
                          ("tokenizer_dir", {"engine_dir": ENGINE_DIR, "tokenizer_dir": "tok"})):
        with pytest.raises(SpecError) as err:
            render_release_repository(meta(), python_models_dir=python_models, **kwargs)
        assert err.value.field == field and "absolute" in str(err.value)
    files = render_release_repository(meta(), engine_dir="/models/engines/../engines/llama/7/",
                                      tokenizer_dir=TOKENIZER_DIR, python_models_dir=python_models)
    assert param(configs(files)["llama_tensorrt_llm_r7"], "gpt_model_path") == ENGINE_DIR


@pytest.mark.parametrize("kwargs, field", [
    ({"releases_resident": 0}, "releases_resident"),
    ({"releases_resident": True}, "releases_resident"),
    ({"headroom": 1.0}, "headroom"),
    ({"headroom": -0.1}, "headroom"),
    ({"max_tokens_in_paged_kv_cache": 0}, "max_tokens_in_paged_kv_cache"),
    ({"model": "bad name"}, "model_name"),
    ({"release": 0}, "version"),
    ({"decoupled": "yes"}, "decoupled"),
    ({"logits_datatype": "FP32"}, "logits_datatype"),
    ({"preprocessing_instances": 0}, "preprocessing_instances"),
])
def test_bad_input_is_named(python_models, kwargs, field):
    with pytest.raises(SpecError) as err:
        render(python_models, **kwargs)
    assert err.value.field == field


def test_missing_python_models_are_named(tmp_path):
    with pytest.raises(SpecError) as err:
        render_release_repository(meta(), engine_dir=ENGINE_DIR, tokenizer_dir=TOKENIZER_DIR,
                                  python_models_dir=tmp_path / "nowhere")
    assert err.value.field == "python_models_dir" and "preprocessing/1/model.py" in str(err.value)
    with pytest.raises(SpecError) as err:
        render_release_repository(meta(build_params={"max_beam_width": 0}), engine_dir=ENGINE_DIR,
                                  tokenizer_dir=TOKENIZER_DIR, python_models_dir=tmp_path)
    assert err.value.field == "build_params.max_beam_width"


def test_install_is_atomic_per_model_ensemble_last_and_a_retry_is_a_no_op(python_models, tmp_path):
    repo = tmp_path / "repo"
    files = render(python_models)
    order = install_release_repository(repo, files)
    assert order[-1] == "llama_r7" and set(order) == {"llama_r7", "llama_preprocessing_r7",
                                                      "llama_tensorrt_llm_r7", "llama_postprocessing_r7"}
    for rel, text in files.items():
        assert (repo / rel).read_text() == text
    assert metadata_of(repo, "llama_r7", 1) == meta()  # what the provenance gate reads before a load
    stamps = {rel: os.stat(repo / rel).st_mtime_ns for rel in files}
    install_release_repository(repo, files)
    assert {rel: os.stat(repo / rel).st_mtime_ns for rel in files} == stamps
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]


def test_a_retry_after_a_crash_finishes_the_rest(python_models, tmp_path):
    repo = tmp_path / "repo"
    files = render(python_models)
    partial = {rel: text for rel, text in files.items() if rel.startswith("llama_preprocessing_r7/")}
    install_release_repository(repo, partial)
    (repo / ".tmp-trtllm-llama_tensorrt_llm_r7-dead").mkdir()  # a crashed install's staging dir
    (repo / ".tmp-trtllm-llama_tensorrt_llm_r7-dead" / "config.pbtxt").write_text("half")
    install_release_repository(repo, files)
    assert sorted(p.name for p in repo.iterdir()) == ["llama_postprocessing_r7", "llama_preprocessing_r7",
                                                       "llama_r7", "llama_tensorrt_llm_r7"]


def test_other_content_is_refused_before_anything_is_written(python_models, tmp_path):
    repo = tmp_path / "repo"
    ensemble_only = {k: v for k, v in render(python_models).items() if k.startswith("llama_r7/")}
    install_release_repository(repo, ensemble_only)
    other = render(python_models, meta(max_batch_size=8))  # same names, other configs
    with pytest.raises(SpecError) as err:
        install_release_repository(repo, other)
    assert "already exists with other content" in str(err.value)
    assert sorted(p.name for p in repo.iterdir()) == ["llama_r7"]  # no composing model was written


@pytest.mark.parametrize("files", [{}, {"config.pbtxt": "x"}, {"../escape/config.pbtxt": "x"},
                                   {"/abs/config.pbtxt": "x"}, {"m/config.pbtxt": b"bytes"}])
def test_install_refuses_malformed_file_sets(tmp_path, files):
    with pytest.raises(SpecError) as err:
        install_release_repository(tmp_path / "repo", files)
    assert err.value.field == "files"
