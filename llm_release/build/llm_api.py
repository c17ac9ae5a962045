"""An LLM-API release: the checkpoint plus a model config, no compiled engine.

TensorRT-LLM's PyTorch backend (the LLM API; served by tensorrtllm_backend's `llmapi` model)
reads a Hugging Face checkpoint at load time, so a release is the checkpoint's files and a
`model.yaml` holding the LLM-API arguments the build parameters stand for (parallelism, batch
and sequence limits, KV cache). Packaged with the same metadata.json contract as an engine,
it goes through the same publish, sync, load, canary and deprecation.

What it cannot do is quantize: the LLM API reads checkpoints that are already quantized
(ModelOpt), so only the plain dtypes are accepted here. It binds to no GPU architecture
(`gpu_arch: any`); the serving image still matters, and is recorded when given.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import yaml

from llm_release.engine.checkpoint import checkpoint_digest
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError
from llm_release.fsutil import fsync_dir
from llm_release.metadata import (EngineMetadata, check_model_name, check_version, hash_engine_files, read_metadata,
                                  utc_now, write_metadata)
from llm_release.model_repo import TRITON_CONFIG_FILE

BUILDER = "llm-api"
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
CHECKPOINT_DIR = "checkpoint"
MODEL_YAML = "model.yaml"


def check_llm_api_supports(params: BuildParams) -> None:
    if params.precision not in DTYPES:
        raise SpecError("precision", f"{params.precision} needs quantization, which an LLM-API release does not do",
                        f"use {', '.join(DTYPES)}, or quantize the checkpoint with ModelOpt and release it as bf16")


def llm_api_config(params: BuildParams) -> dict:
    """The LLM-API arguments of the release (tensorrt_llm.llmapi.LLM keyword names)."""
    config = {
        "backend": "pytorch",
        "model": CHECKPOINT_DIR,  # resolved against the version directory by the serving model
        "dtype": DTYPES[params.precision],
        "tensor_parallel_size": params.tp_size,
        "pipeline_parallel_size": params.pp_size,
        "max_batch_size": params.max_batch_size,
        "max_input_len": params.max_input_len,
        "max_seq_len": params.max_seq_len,
    }
    max_num_tokens = getattr(params, "max_num_tokens", None)
    if max_num_tokens:
        config["max_num_tokens"] = max_num_tokens
    kv_dtype = getattr(params, "kv_cache_dtype", None)
    if kv_dtype:
        config["kv_cache_config"] = {"dtype": kv_dtype}
    return config


def llm_api_triton_config(model_name: str) -> dict:
    """The Triton config of an LLM-API release: tensorrtllm_backend's `llmapi` Python model,
    decoupled (it streams), batching left to the LLM API's own scheduler (max_batch_size 0),
    one instance per model (the LLM API spreads itself over the GPUs tp x pp names)."""
    return {
        "name": model_name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
                  {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": [1], "optional": True},
                  {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True}],
        "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"kind": "KIND_MODEL", "count": 1}],
    }


def package_llm_api_release(checkpoint, out_dir, params: BuildParams, *, model_name: str, version: int,
                            image: str | None = None) -> EngineMetadata:
    """Copy the checkpoint and write model.yaml + metadata.json into out_dir, atomically.

    An existing out_dir with the same release inside is returned as is (a retry); anything else
    there is refused, like the engine builder does.
    """
    check_llm_api_supports(params)
    check_model_name(model_name)
    check_version(version)
    source = Path(checkpoint)
    if not source.is_dir():
        raise SpecError("checkpoint", f"{source} is not a directory", "point at the checkpoint directory")
    out = Path(out_dir)
    digest = checkpoint_digest(source)
    config_text = yaml.safe_dump(llm_api_config(params), sort_keys=True)
    if out.exists():
        existing = read_metadata(out)
        if (existing.source_checkpoint_digest, existing.build_params, existing.builder) == \
                (digest, params.to_dict(), BUILDER) and (out / MODEL_YAML).read_text() == config_text:
            return existing
        raise SpecError("out_dir", f"{out} already holds another build", "remove it or use a new version")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"
    try:
        shutil.copytree(source, tmp / CHECKPOINT_DIR, symlinks=False)
        (tmp / MODEL_YAML).write_text(config_text, encoding="utf-8")
        # What the model repository's config.pbtxt is made from at install (llm_release.model_repo).
        (tmp / TRITON_CONFIG_FILE).write_text(json.dumps(llm_api_triton_config(model_name), indent=2, sort_keys=True)
                                              + "\n", encoding="utf-8")
        meta = EngineMetadata(
            model=model_name, version=version, precision=params.precision, max_batch_size=params.max_batch_size,
            max_input_len=params.max_input_len, max_seq_len=params.max_seq_len, tp_size=params.tp_size,
            pp_size=params.pp_size, gpu_arch="any", builder=BUILDER, trtllm_version=None, triton_image=image,
            build_params=params.to_dict(), source_checkpoint_digest=digest, created_at=utc_now(),
            files=hash_engine_files(tmp))
        write_metadata(tmp, meta)
        for dirpath, _, filenames in os.walk(tmp):
            for name in filenames:
                with open(Path(dirpath) / name, "rb+") as fh:
                    os.fsync(fh.fileno())
        os.rename(tmp, out)
        fsync_dir(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return meta
