"""How a model's release versions map onto Triton, behind one interface.

- `PlainVersions`: several versions of one Triton model side by side (`<m>/<n>/`). Fits the
  reference engine and Python-backend models.
- `ModelPerRelease`: TensorRT-LLM reads its engine from a model-level `gpt_model_path`, so two
  versions of one `tensorrt_llm` model cannot serve two engines. A release is then a model of
  its own, e.g. `tensorrt_llm_r42` (version directory 1), loaded and unloaded by name.
- `DeploymentPerVersion`: one Triton deployment per version; each is asked about its own.

All three answer the same questions (what is READY, load beside, unload, probe), so readiness
checks, traffic shifts and deprecation do not care which one a release uses.

Given a runtime (`runtime=`: a RuntimeInfo, or a reader that returns one when a load is about to
happen), `load` is also the provenance gate (llm_release.provenance): it reads the installed
version's metadata.json and refuses an engine built for another image, TensorRT-LLM version or
GPU architecture before Triton is asked anything. It sits here because every loader (the
release machine, the load operator, the rehearsal) goes through one of these three. Without a
runtime nothing is checked, as before.
"""

from __future__ import annotations

import abc
import re

from llm_release.errors import SpecError, TritonError
from llm_release.provenance import RuntimeSource, check_installed, resolve
from llm_release.triton_control import ProbeResult, TritonControl


class ServedVersions(abc.ABC):
    topology: str = "abstract"
    runtime: RuntimeSource = None  # None: provenance is not checked

    def check_provenance(self, triton: TritonControl, triton_model: str, triton_version: int, *,
                         runtime: RuntimeSource = None) -> None:
        """Refuse (ProvenanceMismatch) an installed engine this runtime cannot run; no-op without a runtime."""
        runtime = resolve(runtime if runtime is not None else self.runtime)
        if runtime is not None:
            # A version that is not installed gets the load's own message, not the gate's.
            triton.require_version_dirs(triton_model, [triton_version])
            check_installed(triton.model_repository, triton_model, triton_version, runtime)

    @abc.abstractmethod
    def ready_versions(self, model: str) -> list[int]:
        """Release versions of `model` that are READY."""

    @abc.abstractmethod
    def load(self, model: str, version: int) -> list[int]:
        """Make `version` READY without touching the serving ones; return READY versions."""

    @abc.abstractmethod
    def unload(self, model: str, version: int) -> list[int]:
        """Stop serving `version` (others untouched); return READY versions."""

    @abc.abstractmethod
    def probe(self, model: str, version: int) -> ProbeResult:
        """A real inference against exactly that version."""


class PlainVersions(ServedVersions):
    topology = "versions"

    def __init__(self, triton: TritonControl, *, runtime: RuntimeSource = None):
        self.triton = triton
        self.runtime = runtime

    def ready_versions(self, model: str) -> list[int]:
        return self.triton.ready_versions(model)

    def load(self, model: str, version: int) -> list[int]:
        self.check_provenance(self.triton, model, version)
        return self.triton.load_versions(model, sorted(set(self.triton.ready_versions(model)) | {version}))

    def unload(self, model: str, version: int) -> list[int]:
        return self.triton.unload_versions(model, [version])

    def probe(self, model: str, version: int) -> ProbeResult:
        return self.triton.probe(model, version)


class ModelPerRelease(ServedVersions):
    """Release N of `m` is the Triton model `<m>_r<N>` (its own directory, version 1)."""

    topology = "model_per_release"

    def __init__(self, triton: TritonControl, *, suffix: str = "_r", runtime: RuntimeSource = None):
        self.triton = triton
        self.suffix = suffix
        self.runtime = runtime

    def name(self, model: str, version: int) -> str:
        return f"{model}{self.suffix}{version}"

    def ready_versions(self, model: str) -> list[int]:
        pattern = re.compile(rf"^{re.escape(model + self.suffix)}([1-9][0-9]*)$")
        found = set()
        for entry in self.triton.repository_index():
            match = pattern.match(entry.get("name", ""))
            if match and entry.get("state") == "READY":
                found.add(int(match.group(1)))
        return sorted(found)

    def load(self, model: str, version: int) -> list[int]:
        # The Triton model clients call (for TensorRT-LLM, the ensemble; llm_release.trtllm_repo
        # puts the engine's metadata.json in its version directory).
        self.check_provenance(self.triton, self.name(model, version), 1)
        self.triton.load_versions(self.name(model, version), [1])
        return self.ready_versions(model)

    def unload(self, model: str, version: int) -> list[int]:
        self.triton.unload_versions(self.name(model, version), [1])
        return self.ready_versions(model)

    def probe(self, model: str, version: int) -> ProbeResult:
        result = self.triton.probe(self.name(model, version), 1)
        return ProbeResult(model=model, version=version, text=result.text, latency_ms=result.latency_ms)


class DeploymentPerVersion(ServedVersions):
    """Version N is served by its own Triton (`tritons[N]`), as version N of the model."""

    topology = "deployment_per_version"

    def __init__(self, tritons: dict[int, TritonControl], *,
                 runtime: RuntimeSource | dict[int, RuntimeSource] = None):
        """`runtime` may differ per deployment ({version: runtime}): a deployment per version is
        how a release moves to a new image."""
        self.tritons = dict(tritons)
        self.runtime = runtime

    def _triton(self, version: int) -> TritonControl:
        if version not in self.tritons:
            raise SpecError("version", f"no Triton deployment is known for version {version}",
                            f"known: {sorted(self.tritons)}")
        return self.tritons[version]

    def ready_versions(self, model: str) -> list[int]:
        ready = []
        for version, triton in sorted(self.tritons.items()):
            try:
                if version in triton.ready_versions(model):
                    ready.append(version)
            except TritonError:
                continue  # a deployment that does not answer serves nothing
        return ready

    def load(self, model: str, version: int) -> list[int]:
        runtime = self.runtime.get(version) if isinstance(self.runtime, dict) else self.runtime
        if isinstance(self.runtime, dict) and runtime is None:
            raise SpecError("runtime", f"no runtime is given for the deployment of version {version}",
                            f"give one for every deployment (known: {sorted(self.runtime)})")
        self.check_provenance(self._triton(version), model, version, runtime=runtime)
        self._triton(version).load_versions(model, [version])
        return self.ready_versions(model)

    def unload(self, model: str, version: int) -> list[int]:
        self._triton(version).unload_versions(model, [version])
        return self.ready_versions(model)

    def probe(self, model: str, version: int) -> ProbeResult:
        return self._triton(version).probe(model, version)
