"""The provenance gate: an engine is only synced or loaded where it can run.

A TensorRT engine deserializes only in the `tritonserver:<yy.mm>-trtllm-python-py3` image tag,
with the TensorRT-LLM version and on the GPU architecture it was built with (DESIGN section 8);
anywhere else Triton fails the load minutes later ("Serialization assertion ... Version tag does
not match"), or worse, after traffic has started to move. metadata.json records all three
(`triton_image`, `trtllm_version`, `gpu_arch`), so we compare them with the runtime's before
anything changes: before a sync installs a version, before Triton is asked to load one.

What the runtime can tell about itself, and what must be declared:

- `gpu_arch`: Triton's metrics endpoint exports `nv_gpu_*` series only when it sees a GPU. No
  such series means a CPU runtime ("cpu", what the local stack and the reference engines
  record). When a GPU is there, the metrics name it only by UUID: the SM architecture
  (sm80, sm90, ...) cannot be read from Triton and must be declared.
- `image` (the container image tag) and `trtllm_version`: nothing in Triton's API reports them
  (server metadata `/v2` has Triton's own version and extensions, not the image or the
  backends' versions), so they are declared in the environment's `triton.runtime`.
- `/v2` is still read, as a sanity check that the URL is a live Triton, and its version goes
  into every refusal so the person reading it sees which server answered.

A value the engine records but the runtime cannot tell is refused ("declare runtime.<field> in
the environment"), never passed silently. A value the engine does not record (the reference
engine has no TensorRT-LLM version or image) puts no constraint on the runtime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import requests

from llm_release.errors import ProvenanceMismatch, SpecError, TritonError
from llm_release.metadata import EngineMetadata

CPU = "cpu"
RUNTIME_FIELDS = ("image", "trtllm_version", "gpu_arch")
_GPU_ARCH = re.compile(r"^(cpu|sm[0-9]{2,3}[a-z]?)$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class RuntimeInfo:
    """What a serving runtime is: the values an engine's metadata.json must match.

    None means the runtime cannot tell. `triton_version` is what Triton's `/v2` reports (for
    messages only); `sources` says where each value came from ("declared", "Triton metrics at
    <url>").
    """

    image: str | None
    trtllm_version: str | None
    gpu_arch: str | None
    triton_version: str | None = None
    sources: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name) or 'unknown'}" for name in RUNTIME_FIELDS]
        if self.triton_version:
            parts.append(f"triton={self.triton_version}")
        return ", ".join(parts)


RuntimeSource = Union[RuntimeInfo, Callable[[], RuntimeInfo], None]


# -- normalizing --------------------------------------------------------------------------
def normalize_gpu_arch(value: str) -> str:
    """"SM_90", "sm90", "90", "9.0" -> "sm90"; "cpu" stays."""
    text = str(value).strip().lower().replace("_", "").replace(" ", "")
    capability = re.fullmatch(r"([0-9]{1,2})\.([0-9])", text)
    if capability:
        return f"sm{capability.group(1)}{capability.group(2)}"
    if re.fullmatch(r"[0-9]{2,3}[a-z]?", text):
        return "sm" + text
    return text


def image_identity(ref: str) -> tuple[str, str, str | None]:
    """(name, tag, digest) of an image reference. The registry and path are left out: a mirror
    serves the same image under another host, and the rule is "the same image tag"."""
    ref = str(ref).strip()
    ref, _, digest = ref.partition("@")
    last = ref.rsplit("/", 1)[-1]
    name, sep, tag = last.partition(":")
    return name, tag if sep else "latest", digest or None


def _same_image(a: str, b: str) -> bool:
    (name_a, tag_a, digest_a), (name_b, tag_b, digest_b) = image_identity(a), image_identity(b)
    if digest_a and digest_b and digest_a != digest_b:
        return False
    return (name_a, tag_a) == (name_b, tag_b)


def _normalize_version(value: str) -> str:
    text = str(value).strip()
    return text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else text


# -- declared values ----------------------------------------------------------------------
def check_declared(doc: Any, where: str) -> dict[str, str]:
    """Validate a declared runtime ({image, trtllm_version, gpu_arch}, each optional) and return
    it with normalized values; errors name `<where>.<field>`."""
    if not isinstance(doc, Mapping):
        raise SpecError(where, f"{doc!r} is not an object",
                        'write e.g. {"image": "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3", '
                        '"trtllm_version": "1.0.0", "gpu_arch": "sm90"}')
    out: dict[str, str] = {}
    for name in RUNTIME_FIELDS:
        value = doc.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise SpecError(f"{where}.{name}", f"{value!r} is not a non-empty string",
                            "write it as text, or leave it out")
        value = value.strip()
        if name == "gpu_arch":
            value = normalize_gpu_arch(value)
            if not _GPU_ARCH.match(value):
                raise SpecError(f"{where}.gpu_arch", f"{doc.get(name)!r} is not a GPU architecture",
                                "write the SM, e.g. sm80 (A100), sm89 (L40S), sm90 (H100/H200), or cpu")
        elif name == "image" and not _IMAGE.match(value):
            raise SpecError(f"{where}.image", f"{value!r} is not an image reference with a tag",
                            "write e.g. nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3")
        elif name == "trtllm_version":
            value = _normalize_version(value)
            if not re.fullmatch(r"[0-9]+(\.[0-9A-Za-z]+)+", value):
                raise SpecError(f"{where}.trtllm_version", f"{doc.get(name)!r} is not a version",
                                "write it as TensorRT-LLM prints it, e.g. 1.0.0")
        out[name] = value
    return out


def _declared_values(declared: Any) -> dict[str, str]:
    if declared is None:
        return {}
    if isinstance(declared, RuntimeInfo) or not isinstance(declared, Mapping):
        declared = {name: getattr(declared, name, None) for name in RUNTIME_FIELDS}
    return check_declared(declared, "runtime")


# -- reading the runtime -------------------------------------------------------------------
def _get(url: str, timeout_s: float) -> requests.Response:
    try:
        resp = requests.get(url, timeout=timeout_s)
    except requests.RequestException as exc:
        raise TritonError(f"{url} unreachable: {exc}") from exc
    if resp.status_code != 200:
        raise TritonError(f"{url} answered {resp.status_code}: {resp.text[:200]}")
    return resp


def server_version(triton_url: str, *, timeout_s: float = 10.0) -> str:
    """Triton's own version from its server metadata (`GET /v2`); TritonError if the URL is not
    a live Triton."""
    url = f"{triton_url.rstrip('/')}/v2"
    try:
        doc = _get(url, timeout_s).json()
    except ValueError as exc:
        raise TritonError(f"{url} did not answer with Triton's server metadata: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("name") != "triton" or not doc.get("version"):
        raise TritonError(f"{url} is not Triton's server metadata: {str(doc)[:200]}", permanent=True)
    return str(doc["version"])


def gpus_in_metrics(metrics_url: str, *, timeout_s: float = 10.0) -> bool:
    """Whether Triton's metrics carry any `nv_gpu_*` sample (HELP/TYPE lines alone do not count)."""
    text = _get(metrics_url, timeout_s).text
    return any(line.startswith("nv_gpu_") for line in text.splitlines())


def read_runtime_info(triton_url: str, *, metrics_url: str | None = None, declared: Any = None,
                      timeout_s: float = 10.0) -> RuntimeInfo:
    """What the runtime behind `triton_url` is, from what it reports and what is declared.

    - gpu_arch: the declared one; else "cpu" when `metrics_url` (Triton's metrics endpoint, e.g.
      the local stack's `components.triton.metrics_url`) shows no `nv_gpu_*` series; else None
      (a GPU whose architecture Triton does not report, or metrics not read).
    - image, trtllm_version: declared only (Triton does not report them).
    A declared "cpu" on a Triton whose metrics show GPUs is refused (SpecError): one of them is
    wrong. Unreachable endpoints raise TritonError (transient): never guessed.
    """
    values = _declared_values(declared)
    sources = {name: "declared" for name in values}
    version = server_version(triton_url, timeout_s=timeout_s)
    gpu_arch = values.get("gpu_arch")
    if metrics_url:
        gpus = gpus_in_metrics(metrics_url, timeout_s=timeout_s)
        if gpu_arch == CPU and gpus:
            raise SpecError("runtime.gpu_arch", f"is declared cpu but Triton's metrics at {metrics_url} show GPUs "
                            "(nv_gpu_* series)", "declare the GPU's architecture, e.g. sm90")
        if gpu_arch is None and not gpus:
            gpu_arch, sources["gpu_arch"] = CPU, f"Triton metrics at {metrics_url} show no GPU"
    return RuntimeInfo(image=values.get("image"), trtllm_version=values.get("trtllm_version"), gpu_arch=gpu_arch,
                       triton_version=version, sources=sources)


def runtime_reader(triton_url: str, *, metrics_url: str | None = None,
                   declared: Any = None) -> Callable[[], RuntimeInfo]:
    """A zero-argument reader for ServedVersions: the runtime is read when a load is about to
    happen, not when the object is built (building one must not need the network)."""
    _declared_values(declared)  # bad declarations fail where they are made

    def read() -> RuntimeInfo:
        return read_runtime_info(triton_url, metrics_url=metrics_url, declared=declared)

    return read


def resolve(source: RuntimeSource) -> RuntimeInfo | None:
    return source() if callable(source) and not isinstance(source, RuntimeInfo) else source


# -- the gate -----------------------------------------------------------------------------
def _where(runtime: RuntimeInfo, name: str) -> str:
    source = runtime.sources.get(name)
    parts = [source] if source and source != "declared" else []
    if runtime.triton_version:
        parts.append(f"Triton {runtime.triton_version}")
    return f" ({'; '.join(parts)})" if parts else ""


#: What an artifact with no compiled engine (an LLM-API release) records as its GPU architecture.
ANY_GPU_ARCH = "any"


def check_provenance(meta: EngineMetadata, runtime: RuntimeInfo) -> None:
    """Raise ProvenanceMismatch unless `meta`'s engine can run on `runtime`.

    Checked in this order (the most fundamental first): gpu_arch, triton_image (against
    runtime.image, compared by image name and tag), trtllm_version. The error names the field
    and both values.
    """
    label = f"{meta.model} v{meta.version}"
    if meta.gpu_arch == ANY_GPU_ARCH:
        _check_image_and_version(meta, runtime, label)  # an LLM-API release: nothing compiled for a GPU
        return
    engine_arch = normalize_gpu_arch(meta.gpu_arch)
    if runtime.gpu_arch is None:
        raise ProvenanceMismatch("gpu_arch", f"{label} was built for {engine_arch} but the runtime does not say which "
                                 f"GPU architecture it has{_where(runtime, 'gpu_arch')}",
                                 "declare runtime.gpu_arch in the environment", engine=engine_arch, runtime=None)
    runtime_arch = normalize_gpu_arch(runtime.gpu_arch)
    if engine_arch != runtime_arch:
        raise ProvenanceMismatch("gpu_arch", f"{label}: the engine was built for {engine_arch} but the runtime is "
                                 f"{runtime_arch}{_where(runtime, 'gpu_arch')}",
                                 f"build the engine for {runtime_arch} or load it on {engine_arch} nodes",
                                 engine=engine_arch, runtime=runtime_arch)
    _check_image_and_version(meta, runtime, label)


def _check_image_and_version(meta: EngineMetadata, runtime: RuntimeInfo, label: str) -> None:
    if meta.triton_image is not None:
        if runtime.image is None:
            raise ProvenanceMismatch("triton_image", f"{label} was built in {meta.triton_image} but the runtime does "
                                     f"not say which Triton image it runs{_where(runtime, 'image')}",
                                     "declare runtime.image in the environment", engine=meta.triton_image, runtime=None)
        if not _same_image(meta.triton_image, runtime.image):
            raise ProvenanceMismatch("triton_image", f"{label}: the engine was built in {meta.triton_image} but the "
                                     f"runtime runs {runtime.image}{_where(runtime, 'image')}",
                                     f"rebuild the engine in {runtime.image} or serve it from {meta.triton_image}",
                                     engine=meta.triton_image, runtime=runtime.image)
    if meta.trtllm_version is not None:
        engine_version = _normalize_version(meta.trtllm_version)
        if runtime.trtllm_version is None:
            raise ProvenanceMismatch("trtllm_version", f"{label} was built with TensorRT-LLM {engine_version} but the "
                                     "runtime does not say which TensorRT-LLM it has"
                                     f"{_where(runtime, 'trtllm_version')}",
                                     "declare runtime.trtllm_version in the environment",
                                     engine=engine_version, runtime=None)
        runtime_version = _normalize_version(runtime.trtllm_version)
        if engine_version != runtime_version:
            raise ProvenanceMismatch("trtllm_version", f"{label}: the engine was built with TensorRT-LLM "
                                     f"{engine_version} but the runtime has TensorRT-LLM {runtime_version}"
                                     f"{_where(runtime, 'trtllm_version')}",
                                     f"rebuild the engine with TensorRT-LLM {runtime_version} or serve it from an "
                                     f"image with TensorRT-LLM {engine_version}",
                                     engine=engine_version, runtime=runtime_version)


def check_installed(repo_root, triton_model: str, triton_version: int, runtime: RuntimeInfo) -> EngineMetadata:
    """The gate for a load: read the installed version's metadata.json and check it.

    Without a readable repository the gate cannot look, and says so (SpecError) rather than
    letting the load through.
    """
    from llm_release.model_repo import metadata_of

    if not repo_root:
        raise SpecError("triton.model_repository", f"is not set, so the provenance gate cannot read the metadata.json "
                        f"of {triton_model} v{triton_version} before loading it",
                        "set model_repository to where this process can read the repository")
    meta = metadata_of(repo_root, triton_model, triton_version)
    check_provenance(meta, runtime)
    return meta
