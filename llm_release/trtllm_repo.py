"""The Triton model repository of one TensorRT-LLM release: the inflight-batcher ensemble.

TensorRT-LLM's Triton backend reads its engine from the model-level parameter `gpt_model_path`,
so two versions of one `tensorrt_llm` model cannot serve two engines (DESIGN section 8). Each
release therefore gets models of its own, in the model-per-release naming of
llm_release.serving.ModelPerRelease (release N of model M, version directory 1 each):

    M_r<N>                  ensemble: what clients call (text_input -> text_output)
    M_preprocessing_r<N>    Python: tokenizer, text -> token ids
    M_tensorrt_llm_r<N>     the TensorRT-LLM backend, gpt_model_path = the engine (absolute)
    M_postprocessing_r<N>   Python: token ids -> text

Loading `M_r<N>` loads the three it composes; canary metrics (latency, tokens, failures) come
from `M_tensorrt_llm_r<N>`, whose model/version labels are the engine's, not from the ensemble.
The engine's metadata.json is copied into the ensemble's and the tensorrt_llm model's version
directories so the provenance gate (llm_release.provenance) reads it where loads are asked.

The configs follow the TensorRT-LLM 1.0 templates (triton_backend/all_models/
inflight_batcher_llm, served by tritonserver:25.09/25.10-trtllm-python-py3) with their values
filled from metadata.json; the Python models' code (model.py) comes from that same release's
checkout (`python_models_dir`), since it must match the image. See docs/trtllm-repository.md.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from llm_release.errors import SpecError
from llm_release.fsutil import fsync_dir, write_durably
from llm_release.metadata import METADATA_FILE, EngineMetadata, check_model_name, check_version, metadata_bytes
from llm_release.model_repo import CONFIG_FILE, _locked
from llm_release.triton_config import to_pbtxt

BATCHING_STRATEGY = "inflight_fused_batching"
DEFAULT_HEADROOM = 0.1
_TMP_PREFIX = ".tmp-trtllm-"


@dataclass(frozen=True)
class ReleaseNames:
    ensemble: str
    preprocessing: str
    tensorrt_llm: str
    postprocessing: str

    def all(self) -> tuple[str, str, str, str]:
        """Composing models first, the ensemble last: the order they are installed in."""
        return self.preprocessing, self.tensorrt_llm, self.postprocessing, self.ensemble


def release_names(model: str, release: int, *, suffix: str = "_r") -> ReleaseNames:
    model, release = check_model_name(model), check_version(release)
    names = ReleaseNames(ensemble=f"{model}{suffix}{release}",
                         preprocessing=f"{model}_preprocessing{suffix}{release}",
                         tensorrt_llm=f"{model}_tensorrt_llm{suffix}{release}",
                         postprocessing=f"{model}_postprocessing{suffix}{release}")
    for name in names.all():
        try:
            check_model_name(name)
        except SpecError as exc:
            raise SpecError("model", f"{name!r} (a model of release {release}) is not a valid Triton model name",
                            "use a shorter model name") from exc
    return names


def kv_cache_fraction(releases_resident: int = 2, headroom: float = DEFAULT_HEADROOM) -> float:
    """`kv_cache_free_gpu_mem_fraction` that lets `releases_resident` engines share one GPU.

    The backend takes the fraction of the memory free *after its engine is loaded*, so a second
    engine gets a fraction of what the first left. With f = (1 - headroom) / k for every release:
    whatever the load order, k KV caches together take at most k*f = 1 - headroom of the memory
    that was free before the first release loaded (each takes f of something no larger), and the
    k-th engine still finds (1 - (k-1)*f) of it, minus the earlier engines' weights, for its own
    weights. Floored to 4 decimals so rounding never hands out more.
    """
    if isinstance(releases_resident, bool) or not isinstance(releases_resident, int) or releases_resident < 1:
        raise SpecError("releases_resident", f"{releases_resident!r} is not a positive integer",
                        "give how many releases share a GPU at once (2: the serving one and the candidate)")
    if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or not 0 <= headroom < 1:
        raise SpecError("headroom", f"{headroom!r} is not a fraction in [0, 1)",
                        "give the share of free GPU memory no KV cache may take, e.g. 0.1")
    return math.floor((1 - headroom) / releases_resident * 10_000) / 10_000


# -- tensors ------------------------------------------------------------------------------
def _t(name: str, dtype: str, dims: list[int], *, optional: bool = False, scalar: bool = False,
       ragged: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "data_type": dtype if dtype.startswith("TYPE_") else f"TYPE_{dtype}",
                            "dims": list(dims)}
    if scalar:
        spec["reshape"] = {"shape": []}
    if optional:
        spec["optional"] = True
    if ragged:
        spec["allow_ragged_batch"] = True
    return spec


def _preprocessing_io() -> tuple[list, list]:
    """The 1.0 preprocessing model reads the config of every one of these (so all are declared)."""
    inputs = [_t("QUERY", "STRING", [1]), _t("DECODER_QUERY", "STRING", [1], optional=True),
              _t("IMAGE_BYTES", "UINT8", [-1, -1, -1, -1], optional=True),
              _t("IMAGE_URL", "STRING", [1], optional=True), _t("IMAGES", "STRING", [-1], optional=True),
              _t("VIDEO_BYTES", "UINT8", [-1, -1, -1, -1], optional=True),
              _t("REQUEST_OUTPUT_LEN", "INT32", [1]),
              _t("BAD_WORDS_DICT", "STRING", [-1], optional=True), _t("STOP_WORDS_DICT", "STRING", [-1], optional=True),
              _t("EMBEDDING_BIAS_WORDS", "STRING", [-1], optional=True),
              _t("EMBEDDING_BIAS_WEIGHTS", "FP32", [-1], optional=True),
              _t("END_ID", "INT32", [1], optional=True), _t("PAD_ID", "INT32", [1], optional=True),
              _t("PROMPT_TABLE_EXTRA_ID", "UINT64", [1], optional=True)]
    outputs = [_t("INPUT_ID", "INT32", [-1]), _t("REQUEST_INPUT_LEN", "INT32", [1]),
               _t("DECODER_INPUT_ID", "INT32", [-1]), _t("REQUEST_DECODER_INPUT_LEN", "INT32", [1]),
               _t("BAD_WORDS_IDS", "INT32", [2, -1]), _t("STOP_WORDS_IDS", "INT32", [2, -1]),
               _t("EMBEDDING_BIAS", "FP32", [-1]), _t("REQUEST_OUTPUT_LEN", "INT32", [-1]),
               _t("OUT_END_ID", "INT32", [1]), _t("OUT_PAD_ID", "INT32", [1]),
               _t("OUT_PROMPT_TABLE_EXTRA_IDS", "UINT64", [-1]), _t("PIXEL_VALUES", "FP16", [-1, -1, -1, -1]),
               _t("IMAGE_SIZES", "INT64", [-1, 2])]
    return inputs, outputs


def _tensorrt_llm_io(logits: str) -> tuple[list, list]:
    scalar = {"optional": True, "scalar": True}
    ragged = {"optional": True, "ragged": True}
    inputs = [_t("input_ids", "INT32", [-1], **ragged), _t("input_lengths", "INT32", [1], scalar=True),
              _t("request_output_len", "INT32", [1], scalar=True),
              _t("num_return_sequences", "INT32", [1], **scalar),
              _t("draft_input_ids", "INT32", [-1], **ragged), _t("decoder_input_ids", "INT32", [-1], **ragged),
              _t("decoder_input_lengths", "INT32", [1], **scalar),
              _t("end_id", "INT32", [1], **scalar), _t("pad_id", "INT32", [1], **scalar),
              _t("stop_words_list", "INT32", [2, -1], **ragged), _t("bad_words_list", "INT32", [2, -1], **ragged),
              _t("embedding_bias", "FP32", [-1], **ragged), _t("beam_width", "INT32", [1], **scalar),
              _t("temperature", "FP32", [1], **scalar), _t("runtime_top_k", "INT32", [1], **scalar),
              _t("runtime_top_p", "FP32", [1], **scalar), _t("len_penalty", "FP32", [1], **scalar),
              _t("early_stopping", "BOOL", [1], **scalar), _t("repetition_penalty", "FP32", [1], **scalar),
              _t("min_tokens", "INT32", [1], **scalar), _t("presence_penalty", "FP32", [1], **scalar),
              _t("frequency_penalty", "FP32", [1], **scalar), _t("seed", "UINT64", [1], **scalar),
              _t("return_log_probs", "BOOL", [1], **scalar), _t("return_context_logits", "BOOL", [1], **scalar),
              _t("return_generation_logits", "BOOL", [1], **scalar),
              _t("exclude_input_in_output", "BOOL", [1], **scalar), _t("stop", "BOOL", [1], **scalar),
              _t("streaming", "BOOL", [1], **scalar),
              _t("prompt_embedding_table", "FP16", [-1, -1], **ragged),
              _t("prompt_table_extra_ids", "UINT64", [-1], **ragged),
              _t("prompt_vocab_size", "INT32", [1], **scalar), _t("lora_task_id", "UINT64", [1], **scalar),
              _t("lora_weights", "FP16", [-1, -1], **ragged), _t("lora_config", "INT32", [-1, 3], **ragged)]
    outputs = [_t("output_ids", "INT32", [-1, -1]), _t("sequence_length", "INT32", [-1]),
               _t("cum_log_probs", "FP32", [-1]), _t("output_log_probs", "FP32", [-1, -1]),
               _t("context_logits", logits, [-1, -1]), _t("generation_logits", logits, [-1, -1, -1]),
               _t("batch_index", "INT32", [1]), _t("sequence_index", "INT32", [1])]
    return inputs, outputs


def _postprocessing_io() -> tuple[list, list]:
    return ([_t("TOKENS_BATCH", "INT32", [-1, -1]), _t("SEQUENCE_LENGTH", "INT32", [-1])],
            [_t("OUTPUT", "STRING", [-1])])


def _ensemble_io(logits: str) -> tuple[list, list]:
    optional = {"optional": True}
    inputs = [_t("text_input", "STRING", [1]), _t("max_tokens", "INT32", [1]),
              _t("bad_words", "STRING", [-1], **optional), _t("stop_words", "STRING", [-1], **optional),
              _t("embedding_bias_words", "STRING", [-1], **optional),
              _t("embedding_bias_weights", "FP32", [-1], **optional),
              _t("end_id", "INT32", [1], **optional), _t("pad_id", "INT32", [1], **optional),
              _t("num_return_sequences", "INT32", [1], **optional), _t("beam_width", "INT32", [1], **optional),
              _t("top_k", "INT32", [1], **optional), _t("top_p", "FP32", [1], **optional),
              _t("temperature", "FP32", [1], **optional), _t("length_penalty", "FP32", [1], **optional),
              _t("repetition_penalty", "FP32", [1], **optional), _t("min_tokens", "INT32", [1], **optional),
              _t("presence_penalty", "FP32", [1], **optional), _t("frequency_penalty", "FP32", [1], **optional),
              _t("seed", "UINT64", [1], **optional), _t("return_log_probs", "BOOL", [1], **optional),
              _t("return_context_logits", "BOOL", [1], **optional),
              _t("return_generation_logits", "BOOL", [1], **optional),
              _t("exclude_input_in_output", "BOOL", [1], **optional), _t("stream", "BOOL", [1], **optional)]
    outputs = [_t("text_output", "STRING", [-1]), _t("cum_log_probs", "FP32", [-1]),
               _t("output_log_probs", "FP32", [-1, -1]), _t("context_logits", logits, [-1, -1]),
               _t("generation_logits", logits, [-1, -1, -1]), _t("batch_index", "INT32", [1]),
               _t("sequence_index", "INT32", [1])]
    return inputs, outputs


# The ensemble's wiring, step by step: {composing input: ensemble tensor} and
# {composing output: ensemble tensor}. Names starting with "_" are internal to the ensemble.
_PRE_IN = {"QUERY": "text_input", "REQUEST_OUTPUT_LEN": "max_tokens", "BAD_WORDS_DICT": "bad_words",
           "STOP_WORDS_DICT": "stop_words", "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
           "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights", "END_ID": "end_id", "PAD_ID": "pad_id"}
_PRE_OUT = {"REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN", "INPUT_ID": "_INPUT_ID",
            "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN", "STOP_WORDS_IDS": "_STOP_WORDS_IDS",
            "BAD_WORDS_IDS": "_BAD_WORDS_IDS", "EMBEDDING_BIAS": "_EMBEDDING_BIAS",
            "OUT_END_ID": "_PREPROCESSOR_END_ID", "OUT_PAD_ID": "_PREPROCESSOR_PAD_ID"}
_TRT_IN = {"input_ids": "_INPUT_ID", "input_lengths": "_REQUEST_INPUT_LEN",
           "request_output_len": "_REQUEST_OUTPUT_LEN", "end_id": "_PREPROCESSOR_END_ID",
           "pad_id": "_PREPROCESSOR_PAD_ID", "embedding_bias": "_EMBEDDING_BIAS",
           "stop_words_list": "_STOP_WORDS_IDS", "bad_words_list": "_BAD_WORDS_IDS",
           "runtime_top_k": "top_k", "runtime_top_p": "top_p", "temperature": "temperature",
           "len_penalty": "length_penalty", "repetition_penalty": "repetition_penalty", "min_tokens": "min_tokens",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "seed": "seed",
           "return_log_probs": "return_log_probs", "return_context_logits": "return_context_logits",
           "return_generation_logits": "return_generation_logits", "num_return_sequences": "num_return_sequences",
           "beam_width": "beam_width", "exclude_input_in_output": "exclude_input_in_output", "streaming": "stream"}
_TRT_OUT = {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH", "cum_log_probs": "cum_log_probs",
            "output_log_probs": "output_log_probs", "context_logits": "context_logits",
            "generation_logits": "generation_logits", "batch_index": "batch_index", "sequence_index": "sequence_index"}
_POST_IN = {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"}
_POST_OUT = {"OUTPUT": "text_output"}


def _params(values: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Backend parameters are strings in Triton's config; booleans as the backend spells them."""
    def text(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    return {k: {"string_value": text(v)} for k, v in values.items() if v is not None}


def _absolute(value: Any, field: str, what: str) -> str:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise SpecError(field, f"{value!r} is not a path", f"give the absolute path of {what}")
    text = os.fspath(value)
    if not os.path.isabs(text) or "\n" in text or "${" in text:
        raise SpecError(field, f"{text!r} is not an absolute path",
                        f"give the absolute path of {what} as the Triton server sees it")
    return os.path.normpath(text)


def _python_model(python_models_dir, kind: str) -> str:
    path = Path(python_models_dir) / kind / "1" / "model.py"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError("python_models_dir", f"cannot read {path}: {exc.strerror or exc}",
                        "point at triton_backend/all_models/inflight_batcher_llm of the TensorRT-LLM release the "
                        "image ships (1.0.0 in tritonserver:25.10-trtllm-python-py3)") from exc


def render_release_repository(meta: EngineMetadata, *, model: str | None = None, release: int | None = None,
                              engine_dir, tokenizer_dir, python_models_dir, releases_resident: int = 2,
                              headroom: float = DEFAULT_HEADROOM, max_tokens_in_paged_kv_cache: int | None = None,
                              decoupled: bool = True, max_queue_delay_microseconds: int = 0,
                              preprocessing_instances: int = 1, postprocessing_instances: int = 1,
                              logits_datatype: str = "TYPE_FP32", enable_kv_cache_reuse: bool = False,
                              suffix: str = "_r") -> dict[str, str]:
    """The four models of one release as {relative path: file text}, for install_release_repository.

    :param meta: the engine's metadata.json (max batch size, beam width from build_params).
    :param model, release: the served model name and release number (default: the engine's).
    :param engine_dir: absolute path of the engine directory as Triton sees it (gpt_model_path).
    :param tokenizer_dir: absolute path of the Hugging Face tokenizer as Triton sees it.
    :param python_models_dir: the TensorRT-LLM checkout's inflight_batcher_llm directory, whose
        preprocessing/1/model.py and postprocessing/1/model.py are used as they are.
    :param releases_resident, headroom: size the KV cache so that many releases fit (kv_cache_fraction).
    :param max_tokens_in_paged_kv_cache: an absolute cap as well (the backend takes the smaller).
    :param decoupled: stream responses (generate_stream); True, because we stream.
    """
    if not isinstance(meta, EngineMetadata):
        raise SpecError("meta", f"{type(meta).__name__} is not EngineMetadata", "read it with read_metadata()")
    model = check_model_name(meta.model if model is None else model)
    release = check_version(meta.version if release is None else release)
    names = release_names(model, release, suffix=suffix)
    engine_dir = _absolute(engine_dir, "engine_dir", "the engine directory")
    tokenizer_dir = _absolute(tokenizer_dir, "tokenizer_dir", "the tokenizer")
    fraction = kv_cache_fraction(releases_resident, headroom)
    if not isinstance(decoupled, bool):
        raise SpecError("decoupled", f"{decoupled!r} is not true or false", "write true (streaming) or false")
    if max_tokens_in_paged_kv_cache is not None and (isinstance(max_tokens_in_paged_kv_cache, bool) or not isinstance(
            max_tokens_in_paged_kv_cache, int) or max_tokens_in_paged_kv_cache < 1):
        raise SpecError("max_tokens_in_paged_kv_cache", f"{max_tokens_in_paged_kv_cache!r} is not a positive integer",
                        "give a token count, or leave it out")
    for field, value in (("max_queue_delay_microseconds", max_queue_delay_microseconds),
                         ("preprocessing_instances", preprocessing_instances),
                         ("postprocessing_instances", postprocessing_instances)):
        low = 0 if field == "max_queue_delay_microseconds" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SpecError(field, f"{value!r} is not an integer >= {low}", f"give an integer >= {low}")
    if logits_datatype not in ("TYPE_FP32", "TYPE_FP16", "TYPE_BF16"):
        raise SpecError("logits_datatype", f"{logits_datatype!r} is not TYPE_FP32, TYPE_FP16 or TYPE_BF16",
                        "match the engine's --logits_dtype")
    beam = meta.build_params.get("max_beam_width", 1)
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise SpecError("build_params.max_beam_width", f"{beam!r} is not a positive integer", "rebuild the engine")
    batch = meta.max_batch_size
    pre_code = _python_model(python_models_dir, "preprocessing")
    post_code = _python_model(python_models_dir, "postprocessing")
    queue = {"preferred_batch_size": [batch], "max_queue_delay_microseconds": max_queue_delay_microseconds}

    pre_in, pre_out = _preprocessing_io()
    preprocessing = {
        "name": names.preprocessing, "backend": "python", "max_batch_size": batch, "dynamic_batching": queue,
        "input": pre_in, "output": pre_out,
        "instance_group": [{"count": preprocessing_instances, "kind": "KIND_CPU"}],
        "parameters": _params({"tokenizer_dir": tokenizer_dir, "add_special_tokens": True,
                               "multimodal_model_path": "", "gpt_model_path": engine_dir}),
    }
    trt_in, trt_out = _tensorrt_llm_io(logits_datatype)
    tensorrt_llm = {
        "name": names.tensorrt_llm, "backend": "tensorrtllm", "max_batch_size": batch,
        "model_transaction_policy": {"decoupled": decoupled}, "dynamic_batching": queue,
        "input": trt_in, "output": trt_out,
        # The backend places the engine on GPUs itself (gpu_device_ids); Triton's instance is a CPU one.
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _params({
            "gpt_model_type": BATCHING_STRATEGY, "gpt_model_path": engine_dir, "max_beam_width": beam,
            "batch_scheduler_policy": "guaranteed_no_evict", "kv_cache_free_gpu_mem_fraction": f"{fraction:g}",
            "max_tokens_in_paged_kv_cache": max_tokens_in_paged_kv_cache, "exclude_input_in_output": True,
            "enable_kv_cache_reuse": enable_kv_cache_reuse, "enable_chunked_context": False,
            "FORCE_CPU_ONLY_INPUT_TENSORS": "no", "tokenizer_dir": tokenizer_dir,
        }),
    }
    post_in, post_out = _postprocessing_io()
    postprocessing = {
        "name": names.postprocessing, "backend": "python", "max_batch_size": batch, "dynamic_batching": {},
        "input": post_in, "output": post_out,
        "instance_group": [{"count": postprocessing_instances, "kind": "KIND_CPU"}],
        "parameters": _params({"tokenizer_dir": tokenizer_dir, "skip_special_tokens": True}),
    }
    ens_in, ens_out = _ensemble_io(logits_datatype)
    ensemble = {
        "name": names.ensemble, "platform": "ensemble", "max_batch_size": batch, "input": ens_in, "output": ens_out,
        "ensemble_scheduling": {"step": [
            {"model_name": names.preprocessing, "model_version": 1, "input_map": _PRE_IN, "output_map": _PRE_OUT},
            {"model_name": names.tensorrt_llm, "model_version": 1, "input_map": _TRT_IN, "output_map": _TRT_OUT},
            {"model_name": names.postprocessing, "model_version": 1, "input_map": _POST_IN, "output_map": _POST_OUT},
        ]},
    }
    metadata = metadata_bytes(meta).decode("utf-8")
    return {
        f"{names.preprocessing}/{CONFIG_FILE}": to_pbtxt(preprocessing),
        f"{names.preprocessing}/1/model.py": pre_code,
        f"{names.tensorrt_llm}/{CONFIG_FILE}": to_pbtxt(tensorrt_llm),
        f"{names.tensorrt_llm}/1/{METADATA_FILE}": metadata,
        f"{names.postprocessing}/{CONFIG_FILE}": to_pbtxt(postprocessing),
        f"{names.postprocessing}/1/model.py": post_code,
        f"{names.ensemble}/{CONFIG_FILE}": to_pbtxt(ensemble),
        f"{names.ensemble}/1/{METADATA_FILE}": metadata,
    }


# -- installing -----------------------------------------------------------------------------
def _group(files: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """{model dir: {path inside it: text}}, every path checked to stay inside its model dir."""
    if not isinstance(files, Mapping) or not files:
        raise SpecError("files", "is empty", "pass what render_release_repository returned")
    models: dict[str, dict[str, str]] = {}
    for rel, text in files.items():
        parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
        if len(parts) < 2 or PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise SpecError("files", f"{rel!r} is not <model>/<file> inside the repository",
                            "pass what render_release_repository returned")
        if not isinstance(text, str):
            raise SpecError("files", f"{rel}: content is {type(text).__name__}, not text", "pass file texts")
        check_model_name(parts[0])
        models.setdefault(parts[0], {})[PurePosixPath(*parts[1:]).as_posix()] = text
    return models


def _tree(model_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(model_dir).as_posix(): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}


def install_release_repository(repo_root, files: Mapping[str, str]) -> list[str]:
    """Install each model directory of `files` whole or not at all; return the model names.

    Order: the composing models before the ensemble (the ensemble, which clients call and whose
    load pulls in the rest, appears last). Each model dir is staged as `<repo>/.tmp-trtllm-*`,
    fsynced and renamed into place. A model dir already there with exactly these files is left
    alone (a retry after a crash finishes the rest); one with other content is refused before
    anything is written.
    """
    root = Path(repo_root)
    models = _group(files)
    ordered = sorted(models, key=lambda name: any(rel == CONFIG_FILE and 'platform: "ensemble"' in text
                                                  for rel, text in models[name].items()))
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        for entry in root.iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        pending = []
        for name in ordered:
            wanted = {rel: text.encode("utf-8") for rel, text in models[name].items()}
            target = root / name
            if target.exists():
                if not target.is_dir() or _tree(target) != wanted:
                    raise SpecError("files", f"{target} already exists with other content",
                                    "a release's models are never overwritten: render a new release number")
                continue
            pending.append((name, wanted))
        for name, wanted in pending:
            tmp = root / f"{_TMP_PREFIX}{name}-{secrets.token_hex(6)}"
            try:
                for rel, data in wanted.items():
                    path = tmp / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_durably(path, data)
                for directory in sorted({(tmp / rel).parent for rel in wanted} | {tmp}, reverse=True):
                    fsync_dir(directory)
                os.rename(tmp, root / name)
                fsync_dir(root)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
    return ordered
