"""Build parameters of an engine, validated before anything is built.

The names mirror TensorRT-LLM 1.0.0 (the release in `nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3`,
docker/build/Dockerfile's default TRITON_TAG) so one spec drives both the TensorRT-LLM build on
a GPU pod (llm_release/build/trtllm.py) and the reference builder here. Where each rule was
checked (docs/builds.md has the full table):

- `max_batch_size`, `max_input_len`, `max_seq_len` (alias `--max_decoder_seq_len`; there is no
  `--max_output_len`), `max_num_tokens`, `kv_cache_type {continuous,paged,disabled}`:
  `trtllm-build` flags in tensorrt_llm/commands/build.py.
- `max_num_tokens`: TensorRT-LLM silently rewrites a value above max_batch_size * max_seq_len
  (down to it) and, without context FMHA, one below max_input_len (up to it)
  (tensorrt_llm/models/modeling_utils.py, check_max_num_tokens). We refuse both instead, so the
  engine is built with exactly the value the spec names.
- `tp_size`, `pp_size`: fixed at checkpoint conversion (`--tp_size/--pp_size` of
  convert_checkpoint.py and quantize.py); `trtllm-build` builds tp*pp ranks. TensorRT-LLM does not
  require powers of two (Mapping only needs world_size = tp * pp); the model's attention heads must
  divide by tp_size, which only the converter can check. We cap tp*pp at 64 (8 nodes of 8 GPUs).
- precisions map onto checkpoint formats: fp32/fp16/bf16 = `--dtype float32|float16|bfloat16`;
  int8 = weight-only int8 (`--use_weight_only --weight_only_precision int8`, per-channel scales,
  what the reference builder does per row); int4_wo = weight-only int4; int8_sq = SmoothQuant,
  fp8 and int4_awq = ModelOpt `quantize.py --qformat int8_sq|fp8|int4_awq`
  (examples/quantization/quantize.py).
- `kv_cache_dtype {int8,fp8}` = `quantize.py --kv_cache_dtype` (calibrated KV scales).

Every check raises SpecError naming the field, because these values come from a release spec
written by a person. What only the reference numpy builder cannot do (parallelism, quantized
formats other than int8 weight-only, KV cache options) is refused by `check_reference_supports`,
not here: a spec valid for TensorRT-LLM is a valid BuildParams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from llm_release.errors import SpecError

#: Every precision a TensorRT-LLM build accepts (see the module docstring for the mapping).
PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int8_sq", "int4_wo", "int4_awq")
#: The precisions the reference numpy builder implements.
REFERENCE_PRECISIONS = ("fp32", "fp16", "int8")
KV_CACHE_TYPES = ("paged", "continuous", "disabled")
KV_CACHE_DTYPES = ("fp8", "int8")
MAX_BATCH_SIZE = 4096
MAX_SEQ_LEN = 65536
#: tp_size * pp_size at most: 8 nodes of 8 GPUs.
MAX_WORLD_SIZE = 64
#: Keys a spec may leave out, with their defaults (old specs have none of them).
OPTIONAL_KEYS = ("tp_size", "pp_size", "max_num_tokens", "kv_cache_type", "kv_cache_dtype")

_DESCRIPTIONS = {
    "precision": "Weight/activation format: fp32, fp16, bf16 (plain dtypes), int8 (weight-only "
                 "int8), int4_wo (weight-only int4), int8_sq (SmoothQuant W8A8), fp8 (FP8, "
                 "Ada/Hopper or newer), int4_awq (AWQ int4). The reference builder does fp32, "
                 "fp16 and int8.",
    "max_batch_size": "Most requests the engine schedules at once (trtllm-build --max_batch_size).",
    "max_input_len": "Longest prompt in tokens (trtllm-build --max_input_len).",
    "max_seq_len": "Longest prompt plus generated tokens (trtllm-build --max_seq_len); must "
                   "exceed max_input_len.",
    "tp_size": "Tensor-parallel ranks (one GPU each); fixed at checkpoint conversion.",
    "pp_size": "Pipeline-parallel ranks (one GPU each); fixed at checkpoint conversion.",
    "max_num_tokens": "Most batched tokens per step after padding removal (trtllm-build "
                      "--max_num_tokens); unset lets TensorRT-LLM choose. At least "
                      "max_input_len, at most max_batch_size * max_seq_len.",
    "kv_cache_type": "KV cache layout (trtllm-build --kv_cache_type). Triton's in-flight "
                     "batching needs paged.",
    "kv_cache_dtype": "Quantized KV cache (quantize.py --kv_cache_dtype), calibrated; unset "
                      "keeps the model dtype.",
}


def _require_int(field: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """Refuse anything but a real int in range: bool and numeric strings are spec mistakes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"{value!r} is a {type(value).__name__}, not an integer",
                        f"write it as a bare integer, e.g. {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise SpecError(field, f"{value} is out of range", f"use an integer {bounds}")
    return value


def _require_choice(field: str, value: Any, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(field, f"{value!r} is not a supported {what}",
                        f"use one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class BuildParams:
    """What an engine is built for: precision, the limits it will serve, parallelism, KV cache."""

    precision: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    tp_size: int = 1
    pp_size: int = 1
    max_num_tokens: int | None = None
    kv_cache_type: str = "paged"
    kv_cache_dtype: str | None = None

    def __post_init__(self) -> None:
        _require_choice("precision", self.precision, PRECISIONS, "precision")
        _require_int("max_batch_size", self.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        _require_int("max_input_len", self.max_input_len, minimum=1)
        _require_int("max_seq_len", self.max_seq_len, minimum=2, maximum=MAX_SEQ_LEN)
        if self.max_seq_len <= self.max_input_len:
            raise SpecError("max_seq_len",
                            f"{self.max_seq_len} must be greater than max_input_len "
                            f"({self.max_input_len}) to leave room for generated tokens",
                            f"use at least {self.max_input_len + 1}")
        for field in ("tp_size", "pp_size"):
            _require_int(field, getattr(self, field), minimum=1, maximum=MAX_WORLD_SIZE)
        if self.tp_size * self.pp_size > MAX_WORLD_SIZE:
            raise SpecError("tp_size", f"tp_size * pp_size = {self.tp_size * self.pp_size} "
                            f"ranks is more than {MAX_WORLD_SIZE}",
                            f"keep tp_size * pp_size <= {MAX_WORLD_SIZE}")
        self._check_max_num_tokens()
        _require_choice("kv_cache_type", self.kv_cache_type, KV_CACHE_TYPES, "KV cache type")
        self._check_kv_cache_dtype()

    def _check_max_num_tokens(self) -> None:
        if self.max_num_tokens is None:
            return
        _require_int("max_num_tokens", self.max_num_tokens, minimum=1)
        if self.max_num_tokens < self.max_input_len:
            raise SpecError("max_num_tokens",
                            f"{self.max_num_tokens} is below max_input_len ({self.max_input_len}): "
                            "a whole prompt would not fit in one step",
                            f"use at least {self.max_input_len}, or leave it unset")
        ceiling = self.max_batch_size * self.max_seq_len
        if self.max_num_tokens > ceiling:
            raise SpecError("max_num_tokens",
                            f"{self.max_num_tokens} is above max_batch_size * max_seq_len "
                            f"({ceiling}); TensorRT-LLM would silently lower it",
                            f"use at most {ceiling}, or leave it unset")

    def _check_kv_cache_dtype(self) -> None:
        if self.kv_cache_dtype is None:
            return
        _require_choice("kv_cache_dtype", self.kv_cache_dtype, KV_CACHE_DTYPES, "KV cache dtype")
        if self.kv_cache_type == "disabled":
            raise SpecError("kv_cache_dtype", "is set but kv_cache_type is disabled: there is "
                            "no KV cache to quantize", "unset kv_cache_dtype or use a paged cache")
        if self.precision == "fp32":
            raise SpecError("kv_cache_dtype", "a quantized KV cache needs fp16/bf16 attention; "
                            "precision fp32 has none", "use precision fp16 or bf16, or unset it")
        if self.precision == "fp8" and self.kv_cache_dtype == "int8":
            raise SpecError("kv_cache_dtype", "int8 KV cache with fp8 precision is not a "
                            "calibration recipe of TensorRT-LLM 1.0 (ModelOpt's fp8 recipe "
                            "pairs with an fp8 KV cache)", "use kv_cache_dtype fp8 or unset it")

    @property
    def world_size(self) -> int:
        """GPUs the engine needs: one per rank."""
        return self.tp_size * self.pp_size

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BuildParams":
        """Build from a spec mapping, refusing unknown and missing keys by name."""
        if not isinstance(data, Mapping):
            raise SpecError("build_params", f"expected a mapping, got {type(data).__name__}",
                            "give the build parameters as key: value pairs")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise SpecError(unknown[0] if len(unknown) == 1 else "build_params",
                            f"unknown build parameter(s): {', '.join(unknown)}",
                            f"allowed keys are {', '.join(allowed)}")
        required = [name for name in allowed if name not in OPTIONAL_KEYS]
        missing = [k for k in required if k not in data]
        if missing:
            raise SpecError(missing[0], "is required but missing",
                            f"set all of {', '.join(required)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The spec form (every field, defaults included), accepted back by from_dict."""
        return asdict(self)


def check_reference_supports(params: BuildParams) -> BuildParams:
    """Refuse, naming the field, what the reference numpy builder cannot build.

    It runs on one CPU (no tensor or pipeline parallelism), stores fp32, fp16 or per-row int8
    weights, keeps its own KV cache (no layout or quantization to choose) and has no token
    budget per step. Such specs are fine for TensorRT-LLM; here they would be silently ignored.
    """
    for field in ("tp_size", "pp_size"):
        value = getattr(params, field)
        if value != 1:
            raise SpecError(field, f"{value} is not supported by the reference builder "
                            "(it runs on one CPU, without tensor or pipeline parallelism)",
                            "use 1, or build with TensorRT-LLM")
    if params.precision not in REFERENCE_PRECISIONS:
        raise SpecError("precision", f"{params.precision!r} is not supported by the reference "
                        "builder", f"use one of {', '.join(REFERENCE_PRECISIONS)}, or build with "
                        "TensorRT-LLM")
    if params.kv_cache_dtype is not None:
        raise SpecError("kv_cache_dtype", f"{params.kv_cache_dtype!r} is not supported by the "
                        "reference builder (its KV cache is fp32)",
                        "leave it unset, or build with TensorRT-LLM")
    if params.kv_cache_type != "paged":
        raise SpecError("kv_cache_type", f"{params.kv_cache_type!r} is not supported by the "
                        "reference builder (its runtime always keeps a KV cache)",
                        "leave it at paged, or build with TensorRT-LLM")
    if params.max_num_tokens is not None:
        raise SpecError("max_num_tokens", "is not supported by the reference builder (its "
                        "runtime has no per-step token budget)",
                        "leave it unset, or build with TensorRT-LLM")
    return params


def build_params_schema() -> dict[str, Any]:
    """JSON Schema of BuildParams, for forms (Airflow Params) and spec linting.

    The bounds are the ones __post_init__ enforces; cross-field rules (max_seq_len >
    max_input_len, max_num_tokens range, kv_cache_dtype pairings) are in the descriptions because
    JSON Schema cannot express them; BuildParams still checks them.
    """
    def integer(name: str, minimum: int, maximum: int | None = None, default: Any = None,
                nullable: bool = False) -> dict[str, Any]:
        prop: dict[str, Any] = {"type": ["integer", "null"] if nullable else "integer",
                                "minimum": minimum, "description": _DESCRIPTIONS[name],
                                "title": name.replace("_", " ").capitalize()}
        if maximum is not None:
            prop["maximum"] = maximum
        if default is not None or nullable:
            prop["default"] = default
        return prop

    def choice(name: str, values: tuple[str, ...], default: Any = None,
               nullable: bool = False) -> dict[str, Any]:
        prop: dict[str, Any] = {"type": ["string", "null"] if nullable else "string",
                                "enum": list(values) + ([None] if nullable else []),
                                "description": _DESCRIPTIONS[name],
                                "title": name.replace("_", " ").capitalize()}
        if default is not None or nullable:
            prop["default"] = default
        return prop

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "BuildParams",
        "description": "Engine build parameters (TensorRT-LLM 1.0.0 names; see docs/builds.md).",
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in fields(BuildParams) if f.name not in OPTIONAL_KEYS],
        "properties": {
            "precision": choice("precision", PRECISIONS),
            "max_batch_size": integer("max_batch_size", 1, MAX_BATCH_SIZE),
            "max_input_len": integer("max_input_len", 1),
            "max_seq_len": integer("max_seq_len", 2, MAX_SEQ_LEN),
            "tp_size": integer("tp_size", 1, MAX_WORLD_SIZE, default=1),
            "pp_size": integer("pp_size", 1, MAX_WORLD_SIZE, default=1),
            "max_num_tokens": integer("max_num_tokens", 1, nullable=True),
            "kv_cache_type": choice("kv_cache_type", KV_CACHE_TYPES, default="paged"),
            "kv_cache_dtype": choice("kv_cache_dtype", KV_CACHE_DTYPES, nullable=True),
        },
    }
