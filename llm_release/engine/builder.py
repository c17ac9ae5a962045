"""The reference engine builder: a checkpoint in, an engine directory out, atomically.

It stands in for `trtllm-build` where there is no GPU and honours the same parameters:
precision changes the stored weights (fp16 halves them, int8 quantizes each row with its own
scale), and the limits are recorded in the engine config and enforced by the runtime.

Everything is validated and the whole engine rendered in memory before the first byte is
written; the files then go into a temp directory beside out_dir, are fsynced and renamed into
place, so out_dir is either absent or complete. A retry of an identical build is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from llm_release.engine.checkpoint import checkpoint_digest, npz_bytes, read_checkpoint
from llm_release.engine.params import BuildParams, check_reference_supports
from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.fsutil import fsync_dir, write_durably
from llm_release.metadata import (EngineMetadata, check_created_at, check_model_name,
                                  check_version, sha256_bytes, utc_now, verify_engine,
                                  write_metadata)
from llm_release.triton_config import reference_model_config

LOG = logging.getLogger("llm_release.engine")
ENGINE_FORMAT = "reference-lm-engine/1"
BUILDER = "reference-numpy"
_PACKAGE = Path(__file__).parent
RUNTIME_SOURCE = _PACKAGE / "runtime.py"
MODEL_SOURCE = _PACKAGE / "backend" / "model.py"
_STORAGE_DTYPE = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


def build_engine(checkpoint_dir, out_dir, params: BuildParams | Mapping[str, Any], *,
                 model_name: str, version: int, created_at: str | None = None) -> EngineMetadata:
    """Build the engine of `checkpoint_dir` into `out_dir` and return its metadata.

    If out_dir already holds an identical build (same bytes, any created_at) its metadata is
    returned and nothing is written; if it holds anything else, SpecError("out_dir", ...).
    """
    params = _check_params(params)
    check_model_name(model_name)
    check_version(version)
    if created_at is not None:
        check_created_at(created_at)
    config, weights = read_checkpoint(checkpoint_dir)
    out = Path(out_dir)
    LOG.info("building %s version %d at %s from %s", model_name, version, params.precision,
             checkpoint_dir)
    started = time.monotonic()
    files = render_engine(config, weights, params, model_name)
    meta = EngineMetadata(
        model=model_name, version=version, precision=params.precision,
        max_batch_size=params.max_batch_size, max_input_len=params.max_input_len,
        max_seq_len=params.max_seq_len, tp_size=params.tp_size, pp_size=params.pp_size,
        gpu_arch="cpu", builder=BUILDER, trtllm_version=None, triton_image=None,
        build_params=params.to_dict(), source_checkpoint_digest=checkpoint_digest(checkpoint_dir),
        created_at=created_at or utc_now(),
        files={rel: sha256_bytes(data) for rel, data in sorted(files.items())})
    if out.exists() or out.is_symlink():
        return _existing_build(out, meta)
    if not _write_engine(out, files, meta):
        return _existing_build(out, meta)
    LOG.info("built %s version %d into %s in %.2f s", model_name, version, out,
             time.monotonic() - started)
    return meta


def _check_params(params: Any) -> BuildParams:
    if isinstance(params, BuildParams):
        return check_reference_supports(params)
    if isinstance(params, Mapping):
        return check_reference_supports(BuildParams.from_dict(params))
    raise SpecError("params", f"expected BuildParams or a mapping, got {type(params).__name__}",
                    "pass the build parameters as a dict")


def convert_weights(weights: dict[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    """Weights in the stored precision: fp16 casts all; int8 quantizes every matrix per row
    (symmetric, scale = max |row| / 127, stored as `<name>.scale`) and keeps vectors fp32."""
    if precision == "fp32":
        return dict(weights)
    if precision == "fp16":
        return {name: array.astype(np.float16) for name, array in weights.items()}
    converted = {}
    for name, array in weights.items():
        if array.ndim == 2:
            converted[name], converted[name + ".scale"] = quantize_rows(array)
        else:
            converted[name] = array
    return converted


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization with one fp32 scale per row."""
    peak = np.abs(matrix).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.round(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale


def render_engine(config: dict, weights: dict[str, np.ndarray], params: BuildParams,
                  model_name: str) -> dict[str, bytes]:
    """Every file of the engine directory except metadata.json, as bytes by relative path."""
    engine_config = {
        "format": ENGINE_FORMAT,
        "pretrained_config": config,
        "build_config": {**params.to_dict(), "weight_dtype": _STORAGE_DTYPE[params.precision]},
    }
    return {
        "engine/config.json": _json_bytes(engine_config),
        "engine/weights.npz": npz_bytes(convert_weights(weights, params.precision)),
        "engine/runtime.py": RUNTIME_SOURCE.read_bytes(),
        "model.py": MODEL_SOURCE.read_bytes(),
        "triton_config.json": _json_bytes(reference_model_config(model_name, params)),
    }


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def _existing_build(out: Path, meta: EngineMetadata) -> EngineMetadata:
    """Return the metadata already at out when it is the same build; refuse anything else."""
    try:
        existing = verify_engine(out)
    except (SpecError, ChecksumMismatch) as exc:
        raise SpecError("out_dir", f"{out} already exists and is not an intact engine ({exc})",
                        "choose a new out_dir or remove it") from exc
    if not existing.same_build(meta):
        differ = sorted(k for k, v in meta.to_dict().items()
                        if k != "created_at" and getattr(existing, k) != v)
        raise SpecError("out_dir", f"{out} already holds a different build "
                        f"(differs in {', '.join(differ)})", "choose a new out_dir or remove it")
    LOG.info("identical build already at %s; nothing to do", out)
    return existing


def _write_engine(out: Path, files: dict[str, bytes], meta: EngineMetadata) -> bool:
    """Write into a temp dir beside out, fsync, rename. False if out appeared meanwhile."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(6)}"
    try:
        tmp.mkdir()
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(path, data)
        write_metadata(tmp, meta)
        for directory in {(tmp / rel).parent for rel in files}:
            fsync_dir(directory)
        try:
            os.rename(tmp, out)
        except OSError:
            if out.exists():
                return False
            raise
        fsync_dir(out.parent)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
