"""The command plan of a TensorRT-LLM engine build: which scripts run, with which argv.

Target: TensorRT-LLM 1.0.0 (tag v1.0.0, commit ae8270b7, the tensorrt_llm submodule pin of
tensorrtllm_backend v1.0.0) as shipped in `nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3`
(docker/build/Dockerfile's default TRITON_TAG=25.10; 25.09 ships the same 1.0.0). Every flag
emitted here was checked against the sources of that line, the stored versions around
the tag (docs/builds.md, "Where each flag was checked", has the commits):

- tensorrt_llm/commands/build.py (`trtllm-build`): --checkpoint_dir, --output_dir,
  --max_batch_size, --max_input_len, --max_seq_len, --max_num_tokens, --kv_cache_type
  (KVCacheType parsed case-insensitively: continuous|paged|disabled), --workers, --log_level.
- tensorrt_llm/plugin/plugin.py (add_plugin_argument): --gpt_attention_plugin
  {auto,float16,float32,bfloat16,int32,disable}, --gemm_plugin
  {auto,float16,float32,bfloat16,int32,fp8,nvfp4,disable}, and enable|disable for
  --remove_input_padding, --context_fmha, --use_paged_context_fmha.
- tensorrt_llm/builder.py (build): paged context FMHA does not work with an INT8 KV cache, nor
  with an FP8 KV cache unless the weights are FP8 (the "fp8 quantization workflow"); depending
  on the release trtllm-build either refuses or silently turns it off. We emit `disable` for
  those engines, so the argv says what the engine is. On SM 100-119 it refuses INT8/INT4
  weights, SmoothQuant and an INT8 KV cache (check_gpu_arch refuses them first).
- examples/models/core/{llama,qwen}/convert_checkpoint.py: --model_dir, --output_dir, --dtype
  {auto,float16,bfloat16,float32}, --tp_size, --pp_size, --use_weight_only,
  --weight_only_precision {int8,int4,...}. Mistral and Mixtral use the llama converter.
- examples/quantization/quantize.py (ModelOpt): --model_dir, --output_dir, --dtype, --qformat
  {nvfp4,fp8,int8_sq,int4_awq,w4a8_awq,int8_wo,int4_wo,full_prec}, --kv_cache_dtype {int8,fp8},
  --calib_dataset (hub name or local directory), --calib_size, --tp_size, --pp_size.

Which path: anything that needs calibration (fp8, int8_sq, int4_awq, or a quantized KV cache)
goes through ModelOpt's quantize.py: it is family-independent and is what TensorRT-LLM 1.0
documents for FP8 and AWQ (the converters say "AWQ is only supported by quantize.py"). Plain
dtypes and weight-only int8/int4 need no calibration and go through the family's converter.
Calibration data is always a local directory (datasets' `load_dataset(dir, split="train")`,
a `text` column): nothing is downloaded from a hub during a build.

The examples are not part of the TensorRT-LLM wheel and the Triton `-trtllm-python-py3` images
do not reliably carry them (tensorrtllm_backend issues #721 and #739). Their directory is a
setting (`examples_dir`, default `/app/tensorrt_llm/examples`, where TensorRT-LLM's own release
image keeps them; env LLM_RELEASE_TRTLLM_EXAMPLES_DIR overrides the default): the build image
must carry the v1.0.0 examples there.

The plan is pure: no file is touched here. Every user value is its own argv element.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, Mapping

from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError
from llm_release.metadata import check_model_name, check_version

TRTLLM_VERSION = "1.0.0"
TRITON_TAG = "25.10"
DEFAULT_TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_TAG}-trtllm-python-py3"
EXAMPLES_DIR_ENV = "LLM_RELEASE_TRTLLM_EXAMPLES_DIR"
DEFAULT_EXAMPLES_DIR = "/app/tensorrt_llm/examples"
#: model_family -> converter script, relative to examples_dir (TensorRT-LLM 1.0 layout).
CONVERTERS = {
    "llama": "models/core/llama/convert_checkpoint.py",
    "mistral": "models/core/llama/convert_checkpoint.py",
    "mixtral": "models/core/llama/convert_checkpoint.py",
    "qwen": "models/core/qwen/convert_checkpoint.py",
}
QUANTIZE_SCRIPT = "quantization/quantize.py"
#: Precisions that go through ModelOpt (quantize.py --qformat) and need calibration.
CALIBRATED = {"fp8": "fp8", "int8_sq": "int8_sq", "int4_awq": "int4_awq"}
#: quantize.py --qformat for the other precisions when a quantized KV cache forces ModelOpt.
_KV_ONLY_QFORMAT = {"fp16": "full_prec", "bf16": "full_prec", "int8": "int8_wo",
                    "int4_wo": "int4_wo"}
_DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_WEIGHT_ONLY = {"int8": "int8", "int4_wo": "int4"}
#: Calibration samples (quantize.py --calib_size; its default, 512; AWQ caps itself at 32).
CALIB_SIZE = 512
#: Minimum SM per precision / KV dtype: bf16 needs Ampere (sm80), fp8 Ada or Hopper (sm89).
_MIN_SM = {"bf16": 80, "fp8": 89}
_MIN_SM_KV = {"fp8": 89}
#: SM 100-119 (Blackwell datacenter): trtllm-build refuses INT8/INT4 weights (weight-only and
#: AWQ), SmoothQuant and an INT8 KV cache there (tensorrt_llm/builder.py, build()).
_NO_INT_SM = range(100, 120)
_NOT_ON_NO_INT_SM = ("int8", "int4_wo", "int4_awq", "int8_sq")
#: Where the plan writes inside its work directory.
CHECKPOINT_SUBDIR = "tllm_checkpoint"
ENGINE_SUBDIR = "engine"
# Absolute POSIX paths of plain characters only: no spaces, quotes or shell metacharacters
# (they are argv elements, never shell words, but a path that needs quoting is a spec mistake).
_PATH = re.compile(r"^/[A-Za-z0-9._+@=,/-]*$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                    r"(?:@sha256:[0-9a-f]{64})?$")


def check_abs_path(field_name: str, value: Any) -> str:
    """An absolute, normalized path of plain characters, named by field when refused."""
    if not isinstance(value, str) or not value:
        raise SpecError(field_name, f"{value!r} is not a path", "give an absolute path")
    if "\0" in value or "\n" in value or "\r" in value:
        raise SpecError(field_name, f"{value!r} contains a NUL or newline", "use a plain path")
    if not _PATH.fullmatch(value):
        raise SpecError(field_name, f"{value!r} is not an absolute path of letters, digits and "
                        "._+@=,/- (no spaces, quotes or shell metacharacters)",
                        "rename the directory or pick another one")
    parts = PurePosixPath(value).parts
    if ".." in parts or "." in value.split("/") or "//" in value or \
            (value != "/" and value.endswith("/")):
        raise SpecError(field_name, f"{value!r} is not a normalized path",
                        "write it without '.', '..', '//' or a trailing '/'")
    if value == "/":
        raise SpecError(field_name, "'/' is not a usable directory", "give a subdirectory")
    return value


def check_image(field_name: str, value: Any) -> str:
    """A container image reference: repo[:tag][@sha256:<64 hex>]."""
    if not isinstance(value, str) or len(value) > 512 or not _IMAGE.fullmatch(value):
        raise SpecError(field_name, f"{value!r} is not an image reference",
                        "write it as registry/repo:tag or registry/repo@sha256:<64 hex>")
    return value


def default_examples_dir() -> str:
    return os.environ.get(EXAMPLES_DIR_ENV) or DEFAULT_EXAMPLES_DIR


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


@dataclass(frozen=True)
class Step:
    """One command of the plan: a name for logs and errors, and its argv."""

    name: str
    argv: list[str]


@dataclass(frozen=True)
class TrtllmBuildRequest:
    """Everything a build pod needs; JSON round trip through to_dict/from_dict (the pod's argument)."""

    model: str
    version: int
    model_family: str
    checkpoint_dir: str
    engine_dir: str
    params: BuildParams
    calib_dataset: str | None = None
    examples_dir: str = field(default_factory=default_examples_dir)
    image: str | None = None

    def __post_init__(self) -> None:
        try:
            check_model_name(self.model)
        except SpecError as exc:
            raise SpecError("model", exc.problem, exc.fix) from None
        check_version(self.version)
        if not isinstance(self.model_family, str) or self.model_family not in CONVERTERS:
            raise SpecError("model_family", f"{self.model_family!r} has no checkpoint converter "
                            f"in TensorRT-LLM {TRTLLM_VERSION}'s examples",
                            f"use one of {', '.join(sorted(CONVERTERS))}")
        if isinstance(self.params, Mapping):
            object.__setattr__(self, "params", BuildParams.from_dict(self.params))
        if not isinstance(self.params, BuildParams):
            raise SpecError("params", f"expected build parameters, got {type(self.params).__name__}",
                            "pass a BuildParams or its dict")
        for name in ("checkpoint_dir", "engine_dir", "examples_dir"):
            check_abs_path(name, getattr(self, name))
        if self.calib_dataset is not None:
            check_abs_path("calib_dataset", self.calib_dataset)
        if _inside(self.engine_dir, self.checkpoint_dir) or \
                _inside(self.checkpoint_dir, self.engine_dir):
            raise SpecError("engine_dir", f"{self.engine_dir} and checkpoint_dir "
                            f"{self.checkpoint_dir} overlap", "write the engine somewhere else")
        if needs_calibration(self.params) and self.calib_dataset is None:
            raise SpecError("calib_dataset", f"precision {self.params.precision} with "
                            f"kv_cache_dtype {self.params.kv_cache_dtype} is calibrated and needs "
                            "a local calibration dataset (no hub downloads during builds)",
                            "set calib_dataset to a directory with a train split and a text column")
        if self.image is not None:
            check_image("image", self.image)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["params"] = self.params.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "TrtllmBuildRequest":
        if not isinstance(data, Mapping):
            raise SpecError("request", f"expected a JSON object, got {type(data).__name__}",
                            "pass the build request as a JSON object")
        names = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise SpecError(unknown[0], "is not a build request field",
                            f"known fields are {', '.join(names)}")
        required = ["model", "version", "model_family", "checkpoint_dir", "engine_dir", "params"]
        for name in required:
            if name not in data:
                raise SpecError(name, "is required but missing", f"set all of {', '.join(required)}")
        return cls(**data)


def needs_calibration(params: BuildParams) -> bool:
    return params.precision in CALIBRATED or params.kv_cache_dtype is not None


def uses_modelopt(params: BuildParams) -> bool:
    """True when the checkpoint comes from ModelOpt's quantize.py, not the family converter."""
    return needs_calibration(params)


def first_script(request: TrtllmBuildRequest) -> str:
    """The example script the plan runs first (the runner checks it exists before starting)."""
    rel = QUANTIZE_SCRIPT if uses_modelopt(request.params) else CONVERTERS[request.model_family]
    return f"{request.examples_dir}/{rel}"


def default_work_dir(request: TrtllmBuildRequest) -> str:
    """A scratch directory beside engine_dir (same filesystem, so the final rename is atomic)."""
    parent, name = request.engine_dir.rsplit("/", 1)
    return f"{parent or ''}/.{name}.partial"


def plan_commands(request: TrtllmBuildRequest, *, work_dir: str | None = None) -> list[Step]:
    """The steps of the build, in order: checkpoint (convert or quantize), then trtllm-build.

    The TensorRT-LLM checkpoint goes to <work_dir>/tllm_checkpoint and the engine to
    <work_dir>/engine; the runner renames the engine into engine_dir when everything passed.
    """
    work = check_abs_path("work_dir", work_dir or default_work_dir(request))
    params = request.params
    ckpt = f"{work}/{CHECKPOINT_SUBDIR}"
    engine = f"{work}/{ENGINE_SUBDIR}"
    ranks = ["--tp_size", str(params.tp_size), "--pp_size", str(params.pp_size)]
    if uses_modelopt(params):
        qformat = CALIBRATED.get(params.precision) or _KV_ONLY_QFORMAT[params.precision]
        argv = ["python3", first_script(request), "--model_dir", request.checkpoint_dir,
                "--output_dir", ckpt, "--dtype", _DTYPE.get(params.precision, "auto"),
                "--qformat", qformat, *ranks,
                "--calib_dataset", str(request.calib_dataset), "--calib_size", str(CALIB_SIZE)]
        if params.kv_cache_dtype is not None:
            argv += ["--kv_cache_dtype", params.kv_cache_dtype]
        first = Step("quantize", argv)
    else:
        argv = ["python3", first_script(request), "--model_dir", request.checkpoint_dir,
                "--output_dir", ckpt, "--dtype", _DTYPE.get(params.precision, "auto"), *ranks]
        if params.precision in _WEIGHT_ONLY:
            argv += ["--use_weight_only", "--weight_only_precision", _WEIGHT_ONLY[params.precision]]
        first = Step("convert", argv)
    return [first, Step("trtllm-build", trtllm_build_argv(params, ckpt, engine))]


def trtllm_build_argv(params: BuildParams, checkpoint_dir: str, output_dir: str) -> list[str]:
    """`trtllm-build` with every flag explicit (defaults change between releases)."""
    # fp32 has no fused context attention.
    fmha = params.precision != "fp32"
    argv = ["trtllm-build", "--checkpoint_dir", checkpoint_dir, "--output_dir", output_dir,
            "--max_batch_size", str(params.max_batch_size),
            "--max_input_len", str(params.max_input_len),
            "--max_seq_len", str(params.max_seq_len)]
    if params.max_num_tokens is not None:
        argv += ["--max_num_tokens", str(params.max_num_tokens)]
    argv += ["--kv_cache_type", params.kv_cache_type,
             # "auto" = the checkpoint's dtype (the activations' dtype for quantized formats).
             "--gpt_attention_plugin", "auto",
             "--gemm_plugin", "auto",
             "--remove_input_padding", "enable",
             "--context_fmha", "enable" if fmha else "disable",
             "--use_paged_context_fmha", "enable" if paged_context_fmha(params) else "disable",
             "--workers", str(params.world_size),
             "--log_level", "info"]
    return argv


def paged_context_fmha(params: BuildParams) -> bool:
    """Whether the engine gets paged context FMHA (what KV cache reuse and chunked context need).

    It needs context FMHA and a paged cache, and TensorRT-LLM's builder refuses it (or turns it
    off with a warning) for an INT8 KV cache and for an FP8 KV cache under non-FP8 weights.
    """
    if params.precision == "fp32" or params.kv_cache_type != "paged":
        return False
    if params.kv_cache_dtype == "int8":
        return False
    return params.kv_cache_dtype != "fp8" or params.precision == "fp8"


def sm_number(gpu_arch: str) -> int:
    match = re.fullmatch(r"sm(\d+)", gpu_arch or "")
    if not match:
        raise SpecError("gpu_arch", f"{gpu_arch!r} is not an SM architecture", "e.g. sm90")
    return int(match.group(1))


def check_gpu_arch(params: BuildParams, gpu_arch: str) -> None:
    """Refuse a precision or KV cache dtype the GPU cannot run, before any step starts."""
    sm = sm_number(gpu_arch)
    need = _MIN_SM.get(params.precision)
    if need and sm < need:
        raise SpecError("precision", f"{params.precision} needs sm{need} or newer; this pod's "
                        f"GPU is {gpu_arch}", "build on a newer GPU or pick another precision")
    need = _MIN_SM_KV.get(params.kv_cache_dtype or "")
    if need and sm < need:
        raise SpecError("kv_cache_dtype", f"{params.kv_cache_dtype} KV cache needs sm{need} or "
                        f"newer; this pod's GPU is {gpu_arch}", "use int8 or unset it")
    if sm in _NO_INT_SM and params.precision in _NOT_ON_NO_INT_SM:
        raise SpecError("precision", f"{params.precision} is an INT8/INT4 format, which "
                        f"TensorRT-LLM's engine builder refuses on {gpu_arch}",
                        "use fp8, bf16 or fp16 on this GPU")
    if sm in _NO_INT_SM and params.kv_cache_dtype == "int8":
        raise SpecError("kv_cache_dtype", f"an int8 KV cache is refused by TensorRT-LLM's "
                        f"engine builder on {gpu_arch}", "use fp8 or unset it")
