"""The build step, pluggable: one name per way of turning a checkpoint into a servable artifact.

- `reference`: the numpy reference builder, in this process (no GPU; what the local stack runs).
- `tensorrt_llm`: convert + `trtllm-build` on a GPU pod (llm_release.build.trtllm and .pod; the
  Airflow side is TRTLLMBuildOperator). Nothing is built in this process.
- `llm_api`: a TensorRT-LLM LLM-API (PyTorch backend) release: the checkpoint and a model
  config, no compiled engine (llm_release.build.llm_api), so it needs no GPU to "build" and
  flows through the same publish, sync, load, canary and deprecation.

Each builder says what it can build (`check`, raising SpecError naming the field), where it
runs, and the builder name it records in metadata.json (how the nightly plan recognises its
own earlier builds). The nightly DAG picks one by its `builder` param.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError


@dataclass(frozen=True)
class Builder:
    name: str
    where: str  # "local": built by the worker; "pod": built on a GPU pod
    metadata_name: str  # EngineMetadata.builder of what it builds
    needs_family: bool
    _check: Callable[[BuildParams], None]
    description: str

    def check(self, params: BuildParams) -> None:
        """Refuse, naming the field, what this builder cannot build."""
        self._check(params)


def _reference_check(params: BuildParams) -> None:
    from llm_release.engine.params import check_reference_supports

    check_reference_supports(params)


def _trtllm_check(params: BuildParams) -> None:
    return None  # BuildParams already holds TensorRT-LLM's rules; the pod's GPUs are checked by the operator


def _llm_api_check(params: BuildParams) -> None:
    from llm_release.build.llm_api import check_llm_api_supports

    check_llm_api_supports(params)


BUILDERS: dict[str, Builder] = {
    "reference": Builder("reference", "local", "reference-numpy", False, _reference_check,
                         "the numpy reference builder on this worker (no GPU)"),
    "tensorrt_llm": Builder("tensorrt_llm", "pod", "tensorrt-llm", True, _trtllm_check,
                            "TensorRT-LLM convert + trtllm-build on a GPU pod"),
    "llm_api": Builder("llm_api", "local", "llm-api", False, _llm_api_check,
                       "a TensorRT-LLM LLM-API release: checkpoint + model config, no compiled engine"),
}


def get_builder(name: str) -> Builder:
    try:
        return BUILDERS[name]
    except KeyError:
        raise SpecError("builder", f"{name!r} is not a builder", f"use one of {', '.join(BUILDERS)}") from None


def build_locally(builder: str, *, checkpoint: str, engine_dir: str, params: dict, model: str, version: int, log=None):
    """Run a local builder (reference or llm_api); returns the EngineMetadata written."""
    chosen = get_builder(builder)
    if chosen.where != "local":
        raise SpecError("builder", f"{builder} builds on a GPU pod, not on this worker",
                        "run it through TRTLLMBuildOperator (the nightly DAG does)")
    build_params = BuildParams.from_dict(params)
    chosen.check(build_params)
    if builder == "reference":
        from llm_release.engine.builder import build_engine

        return build_engine(checkpoint, engine_dir, build_params, model_name=model, version=version)
    from llm_release.build.llm_api import package_llm_api_release

    return package_llm_api_release(checkpoint, engine_dir, build_params, model_name=model, version=version)
