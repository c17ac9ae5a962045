"""Build parameters of an engine, validated before anything is built.

The names mirror `trtllm-build` flags (`--max_batch_size`, `--max_input_len`, `--max_seq_len`,
precision from checkpoint conversion, tp/pp fixed at conversion) so one spec drives both the
TensorRT-LLM build on a GPU and the reference builder here. Every check raises SpecError naming
the field, because these values come from a release spec written by a person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from llm_release.errors import SpecError

PRECISIONS = ("fp32", "fp16", "int8")
MAX_BATCH_SIZE = 4096
MAX_SEQ_LEN = 65536


def _require_int(field: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """Refuse anything but a real int in range: bool and numeric strings are spec mistakes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"{value!r} is a {type(value).__name__}, not an integer",
                        f"write it as a bare integer, e.g. {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise SpecError(field, f"{value} is out of range", f"use an integer {bounds}")
    return value


@dataclass(frozen=True)
class BuildParams:
    """What an engine is built for: precision and the limits it will serve."""

    precision: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    tp_size: int = 1
    pp_size: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise SpecError("precision", f"{self.precision!r} is not a supported precision",
                            f"use one of {', '.join(PRECISIONS)}")
        _require_int("max_batch_size", self.max_batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
        _require_int("max_input_len", self.max_input_len, minimum=1)
        _require_int("max_seq_len", self.max_seq_len, minimum=2, maximum=MAX_SEQ_LEN)
        if self.max_seq_len <= self.max_input_len:
            raise SpecError("max_seq_len",
                            f"{self.max_seq_len} must be greater than max_input_len "
                            f"({self.max_input_len}) to leave room for generated tokens",
                            f"use at least {self.max_input_len + 1}")
        for field in ("tp_size", "pp_size"):
            value = _require_int(field, getattr(self, field), minimum=1)
            if value != 1:
                raise SpecError(field, f"{value} is not supported by the reference builder "
                                "(it runs on one CPU, without tensor or pipeline parallelism)",
                                "use 1, or build with TensorRT-LLM")

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
        required = [f.name for f in fields(cls) if f.name not in ("tp_size", "pp_size")]
        missing = [k for k in required if k not in data]
        if missing:
            raise SpecError(missing[0], "is required but missing",
                            f"set all of {', '.join(required)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The spec form, accepted back by from_dict."""
        return asdict(self)
