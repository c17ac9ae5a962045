"""Triton model configurations: the JSON form Triton's API speaks, and config.pbtxt text.

The JSON form (what `/v2/models/<m>/config` returns and the load API accepts as its "config"
override) is the one we build and compare; `to_pbtxt` renders it as protobuf text format for
`config.pbtxt` without needing protobuf or tritonclient installed where engines are built.
"""

from __future__ import annotations

import json
from typing import Any

from llm_release.engine.params import BuildParams

#: ModelConfig fields whose values are enums (bare words in text format).
ENUM_FIELDS = frozenset({"data_type", "format", "kind", "priority", "timeout_action"})
#: ModelConfig map fields: a JSON object under these names is a map, not a nested message.
MAP_FIELDS = frozenset({"parameters", "cc_model_filenames", "metric_tags", "input_map",
                        "output_map", "inputs", "input", "priority_queue_policy"})
#: Map fields with integer keys.
_INT_KEY_MAPS = frozenset({"priority_queue_policy"})
_INDENT = "  "

# Inputs of the TensorRT-LLM ensemble that the reference model honours, in its order:
# (name, data_type, dims, optional).
_REFERENCE_INPUTS = (
    ("text_input", "TYPE_STRING", [1], False),
    ("max_tokens", "TYPE_INT32", [1], False),
    ("stream", "TYPE_BOOL", [1], True),
    ("temperature", "TYPE_FP32", [1], True),
    ("top_k", "TYPE_INT32", [1], True),
    ("top_p", "TYPE_FP32", [1], True),
    ("random_seed", "TYPE_UINT64", [1], True),
    ("stop_words", "TYPE_STRING", [-1], True),
    ("end_id", "TYPE_INT32", [1], True),
    ("pad_id", "TYPE_INT32", [1], True),
)


def reference_model_config(model_name: str, params: BuildParams) -> dict[str, Any]:
    """The Triton config of a reference engine: a decoupled Python-backend model that takes the
    TensorRT-LLM ensemble's inputs and streams `text_output`."""
    inputs = []
    for name, data_type, dims, optional in _REFERENCE_INPUTS:
        spec = {"name": name, "data_type": data_type, "dims": list(dims)}
        if optional:
            spec["optional"] = True
        inputs.append(spec)
    return {
        "name": model_name,
        "backend": "python",
        "max_batch_size": params.max_batch_size,
        "input": inputs,
        "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "version_policy": {"all": {}},
    }


def to_pbtxt(config: dict[str, Any]) -> str:
    """Render a ModelConfig in JSON form as protobuf text format (config.pbtxt)."""
    return "".join(_message_lines(config, 0))


def _message_lines(message: dict[str, Any], depth: int):
    for key, value in message.items():
        yield from _field_lines(key, value, depth)


def _field_lines(key: str, value: Any, depth: int):
    pad = _INDENT * depth
    if isinstance(value, dict) and key in MAP_FIELDS:
        for map_key, map_value in value.items():
            yield f"{pad}{key} {{\n"
            yield f"{pad}{_INDENT}key: {_map_key(key, map_key)}\n"
            yield from _field_lines("value", map_value, depth + 1)
            yield f"{pad}}}\n"
    elif isinstance(value, dict):
        yield from _block(key, value, depth)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for item in value:
            yield from _block(key, item, depth)
    elif isinstance(value, list):
        yield f"{pad}{key}: [{', '.join(_scalar(key, v) for v in value)}]\n"
    else:
        yield f"{pad}{key}: {_scalar(key, value)}\n"


def _block(key: str, message: dict[str, Any], depth: int):
    """A nested message (also each element of a repeated message field)."""
    pad = _INDENT * depth
    yield f"{pad}{key} {{\n"
    yield from _message_lines(message, depth + 1)
    yield f"{pad}}}\n"


def _map_key(field: str, key: Any) -> str:
    return str(int(key)) if field in _INT_KEY_MAPS else json.dumps(str(key))


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str) and key in ENUM_FIELDS:
        return value
    if isinstance(value, str):
        # JSON string escapes (\", \\, \n, \uXXXX for control characters) are valid in
        # protobuf text format too; non-ASCII text is kept as UTF-8.
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"{key}: cannot render {type(value).__name__} in config.pbtxt")
