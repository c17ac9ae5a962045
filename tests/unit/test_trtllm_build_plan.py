"""The TensorRT-LLM command plan: exact argv per precision and parallelism, refusals by field.

The expected argv are the flags of TensorRT-LLM 1.0.0 (v1.0.0 = commit ae8270b7; docs/builds.md,
"Where each flag was checked"): a change here is a change of what runs on the GPU, so every
element is spelled out.
"""

import pytest

from llm_release.build.trtllm import (DEFAULT_EXAMPLES_DIR, Step, TrtllmBuildRequest,
                                      check_gpu_arch, plan_commands, trtllm_build_argv)
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError

EX = "/opt/trtllm/examples"
PARAMS = {"precision": "fp16", "max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2048}
BASE = {"model": "llama3_8b", "version": 3, "model_family": "llama",
        "checkpoint_dir": "/checkpoints/llama3-8b", "engine_dir": "/engines/llama3_8b/3",
        "params": PARAMS, "examples_dir": EX}
WORK = "/engines/llama3_8b/.3.tmp-x"


def request(**changes):
    params = {**PARAMS, **changes.pop("params", {})}
    return TrtllmBuildRequest.from_dict({**BASE, **changes, "params": params})


def build_tail(precision="fp16", kv="paged", workers="1", fmha="enable", paged_fmha="enable",
               max_num_tokens=None):
    argv = ["trtllm-build", "--checkpoint_dir", f"{WORK}/tllm_checkpoint",
            "--output_dir", f"{WORK}/engine", "--max_batch_size", "8",
            "--max_input_len", "1024", "--max_seq_len", "2048"]
    if max_num_tokens is not None:
        argv += ["--max_num_tokens", str(max_num_tokens)]
    return argv + ["--kv_cache_type", kv, "--gpt_attention_plugin", "auto",
                   "--gemm_plugin", "auto", "--remove_input_padding", "enable",
                   "--context_fmha", fmha, "--use_paged_context_fmha", paged_fmha,
                   "--workers", workers, "--log_level", "info"]


def convert(script="models/core/llama/convert_checkpoint.py", dtype="float16", tp="1", pp="1"):
    return ["python3", f"{EX}/{script}", "--model_dir", "/checkpoints/llama3-8b",
            "--output_dir", f"{WORK}/tllm_checkpoint", "--dtype", dtype,
            "--tp_size", tp, "--pp_size", pp]


def quantize(qformat, dtype="auto", tp="1", pp="1", kv=None):
    argv = ["python3", f"{EX}/quantization/quantize.py", "--model_dir", "/checkpoints/llama3-8b",
            "--output_dir", f"{WORK}/tllm_checkpoint", "--dtype", dtype, "--qformat", qformat,
            "--tp_size", tp, "--pp_size", pp, "--calib_dataset", "/checkpoints/calib",
            "--calib_size", "512"]
    return argv + (["--kv_cache_dtype", kv] if kv else [])


@pytest.mark.parametrize("precision, dtype, extra", [
    ("fp16", "float16", []),
    ("bf16", "bfloat16", []),
    ("int8", "auto", ["--use_weight_only", "--weight_only_precision", "int8"]),
    ("int4_wo", "auto", ["--use_weight_only", "--weight_only_precision", "int4"]),
])
def test_converter_path_per_precision(precision, dtype, extra):
    steps = plan_commands(request(params={"precision": precision}), work_dir=WORK)
    assert steps == [Step("convert", convert(dtype=dtype) + extra),
                     Step("trtllm-build", build_tail())]


def test_fp32_disables_fused_attention():
    steps = plan_commands(request(params={"precision": "fp32"}), work_dir=WORK)
    assert steps[0].argv == convert(dtype="float32")
    assert steps[1].argv == build_tail(fmha="disable", paged_fmha="disable")


@pytest.mark.parametrize("precision, qformat, dtype", [
    ("fp8", "fp8", "auto"), ("int8_sq", "int8_sq", "auto"), ("int4_awq", "int4_awq", "auto"),
])
def test_calibrated_precisions_go_through_modelopt(precision, qformat, dtype):
    steps = plan_commands(request(params={"precision": precision},
                                  calib_dataset="/checkpoints/calib"), work_dir=WORK)
    assert [s.name for s in steps] == ["quantize", "trtllm-build"]
    assert steps[0].argv == quantize(qformat, dtype)
    assert steps[1].argv == build_tail()


@pytest.mark.parametrize("precision, kv, qformat, dtype", [
    ("fp8", "fp8", "fp8", "auto"),
    ("fp16", "fp8", "full_prec", "float16"),
    ("bf16", "int8", "full_prec", "bfloat16"),
    ("int8", "int8", "int8_wo", "auto"),
    ("int4_awq", "fp8", "int4_awq", "auto"),
])
def test_quantized_kv_cache_is_calibrated_by_modelopt(precision, kv, qformat, dtype):
    steps = plan_commands(request(params={"precision": precision, "kv_cache_dtype": kv},
                                  calib_dataset="/checkpoints/calib"), work_dir=WORK)
    assert steps[0] == Step("quantize", quantize(qformat, dtype, kv=kv))


@pytest.mark.parametrize("precision, kv, paged_fmha", [
    # The builder refuses (or silently drops) paged context FMHA with an INT8 KV cache, and with
    # an FP8 KV cache unless the weights are FP8 too: the argv must say what the engine gets.
    ("fp8", "fp8", "enable"),
    ("fp16", "fp8", "disable"),
    ("bf16", "int8", "disable"),
    ("int8", "fp8", "disable"),
    ("int4_awq", "fp8", "disable"),
    ("int8_sq", "int8", "disable"),
])
def test_paged_context_fmha_only_where_the_kv_cache_dtype_allows_it(precision, kv, paged_fmha):
    steps = plan_commands(request(params={"precision": precision, "kv_cache_dtype": kv},
                                  calib_dataset="/checkpoints/calib"), work_dir=WORK)
    assert steps[1].argv == build_tail(paged_fmha=paged_fmha)


@pytest.mark.parametrize("precision", ["fp8", "int8_sq", "int4_awq"])
def test_calibrated_weights_without_kv_quantization_keep_paged_context_fmha(precision):
    steps = plan_commands(request(params={"precision": precision},
                                  calib_dataset="/checkpoints/calib"), work_dir=WORK)
    assert steps[1].argv[steps[1].argv.index("--use_paged_context_fmha") + 1] == "enable"


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2), (4, 2), (3, 1)])
def test_parallelism_is_set_at_conversion_and_built_by_as_many_workers(tp, pp):
    steps = plan_commands(request(params={"tp_size": tp, "pp_size": pp}), work_dir=WORK)
    assert steps[0].argv == convert(tp=str(tp), pp=str(pp))
    assert steps[1].argv == build_tail(workers=str(tp * pp))
    assert "--tp_size" not in steps[1].argv  # trtllm-build has no tp/pp flags


def test_parallel_quantize_passes_ranks_to_modelopt():
    steps = plan_commands(request(params={"precision": "fp8", "tp_size": 8},
                                  calib_dataset="/checkpoints/calib"), work_dir=WORK)
    assert steps[0].argv == quantize("fp8", tp="8")
    assert steps[1].argv[-4:-2] == ["--workers", "8"]


def test_max_num_tokens_and_kv_cache_type():
    steps = plan_commands(request(params={"max_num_tokens": 4096, "kv_cache_type": "continuous"}),
                          work_dir=WORK)
    assert steps[1].argv == build_tail(kv="continuous", paged_fmha="disable", max_num_tokens=4096)


@pytest.mark.parametrize("family, script", [
    ("llama", "models/core/llama/convert_checkpoint.py"),
    ("mistral", "models/core/llama/convert_checkpoint.py"),
    ("mixtral", "models/core/llama/convert_checkpoint.py"),
    ("qwen", "models/core/qwen/convert_checkpoint.py"),
])
def test_family_picks_its_converter(family, script):
    steps = plan_commands(request(model_family=family), work_dir=WORK)
    assert steps[0].argv[1] == f"{EX}/{script}"


def test_no_deprecated_or_removed_flags():
    argv = trtllm_build_argv(BuildParams(**PARAMS), "/w/c", "/w/e")
    for gone in ("--max_output_len", "--use_fp8", "--paged_kv_cache", "--auto_parallel",
                 "--gpus_per_node"):
        assert gone not in argv


def test_default_work_dir_is_beside_the_engine():
    steps = plan_commands(request())
    assert steps[1].argv[4] == "/engines/llama3_8b/.3.partial/engine"


def test_round_trip_through_json_dict():
    req = request(params={"precision": "fp8", "tp_size": 2}, calib_dataset="/checkpoints/calib",
                  image="nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3")
    data = req.to_dict()
    assert data["params"]["tp_size"] == 2
    assert TrtllmBuildRequest.from_dict(data) == req


def test_examples_dir_defaults_to_the_release_image_layout(monkeypatch):
    monkeypatch.delenv("LLM_RELEASE_TRTLLM_EXAMPLES_DIR", raising=False)
    data = {k: v for k, v in BASE.items() if k != "examples_dir"}
    assert TrtllmBuildRequest.from_dict(data).examples_dir == DEFAULT_EXAMPLES_DIR == \
        "/app/tensorrt_llm/examples"
    monkeypatch.setenv("LLM_RELEASE_TRTLLM_EXAMPLES_DIR", "/opt/ex")
    assert TrtllmBuildRequest.from_dict(data).examples_dir == "/opt/ex"


# -- refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("changes, field", [
    ({"model": "llama; rm -rf /"}, "model"),
    ({"model": "$(reboot)"}, "model"),
    ({"version": 0}, "version"),
    ({"version": "3"}, "version"),
    ({"model_family": "gpt-neox"}, "model_family"),
    ({"checkpoint_dir": "relative/path"}, "checkpoint_dir"),
    ({"checkpoint_dir": "/checkpoints/a b"}, "checkpoint_dir"),
    ({"checkpoint_dir": "/checkpoints/x;reboot"}, "checkpoint_dir"),
    ({"checkpoint_dir": "/checkpoints/$(id)"}, "checkpoint_dir"),
    ({"checkpoint_dir": "/checkpoints/x\nrm"}, "checkpoint_dir"),
    ({"checkpoint_dir": "/checkpoints/x\0"}, "checkpoint_dir"),
    ({"engine_dir": "/engines/../etc"}, "engine_dir"),
    ({"engine_dir": "/engines/`id`"}, "engine_dir"),
    ({"engine_dir": "/checkpoints/llama3-8b/engine"}, "engine_dir"),
    ({"examples_dir": "/x|y"}, "examples_dir"),
    ({"calib_dataset": "cnn_dailymail"}, "calib_dataset"),
    ({"image": "nvcr.io/x:25.10 --privileged"}, "image"),
    ({"params": {"max_seq_len": 1024}}, "max_seq_len"),
    ({"params": {"precision": "fp4"}}, "precision"),
    ({"params": {"tp_size": 0}}, "tp_size"),
    ({"params": {"precision": "fp8"}}, "calib_dataset"),
    ({"params": {"kv_cache_dtype": "int8"}}, "calib_dataset"),
    ({"extra": 1}, "extra"),
])
def test_bad_requests_name_the_field(changes, field):
    with pytest.raises(SpecError) as err:
        request(**changes)
    assert err.value.field == field
    assert err.value.fix


def test_missing_field_named():
    data = dict(BASE)
    del data["engine_dir"]
    with pytest.raises(SpecError) as err:
        TrtllmBuildRequest.from_dict(data)
    assert err.value.field == "engine_dir"


@pytest.mark.parametrize("params, arch, field", [
    ({"precision": "fp8"}, "sm80", "precision"),
    ({"precision": "bf16"}, "sm75", "precision"),
    ({"kv_cache_dtype": "fp8"}, "sm86", "kv_cache_dtype"),
    # trtllm-build refuses INT8/INT4 weights, SmoothQuant and an INT8 KV cache on SM 100-119.
    ({"precision": "int8"}, "sm100", "precision"),
    ({"precision": "int4_wo"}, "sm100", "precision"),
    ({"precision": "int4_awq"}, "sm103", "precision"),
    ({"precision": "int8_sq"}, "sm100", "precision"),
    ({"precision": "fp16", "kv_cache_dtype": "int8"}, "sm100", "kv_cache_dtype"),
])
def test_gpu_arch_refusals(params, arch, field):
    with pytest.raises(SpecError) as err:
        check_gpu_arch(BuildParams(**{**PARAMS, **params}), arch)
    assert err.value.field == field


@pytest.mark.parametrize("params, arch", [
    ({"precision": "fp8", "kv_cache_dtype": "fp8"}, "sm89"),
    ({"precision": "fp8"}, "sm90"),
    ({"precision": "bf16"}, "sm80"),
    ({"precision": "int8_sq"}, "sm75"),
    ({"precision": "fp8", "kv_cache_dtype": "fp8"}, "sm100"),
    ({"precision": "bf16"}, "sm100"),
    ({"precision": "int8"}, "sm120"),
    ({"precision": "int4_awq"}, "sm90"),
])
def test_gpu_arch_accepts(params, arch):
    check_gpu_arch(BuildParams(**{**PARAMS, **params}), arch)
