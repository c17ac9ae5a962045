"""How a model's release versions map onto Triton, behind one interface.

- `PlainVersions`: several versions of one Triton model side by side (`<m>/<n>/`). Fits the
  reference engine and Python-backend models.
- `ModelPerRelease`: TensorRT-LLM reads its engine from a model-level `gpt_model_path`, so two
  versions of one `tensorrt_llm` model cannot serve two engines. A release is then a model of
  its own, e.g. `tensorrt_llm_r42` (version directory 1), loaded and unloaded by name.
- `DeploymentPerVersion`: one Triton deployment per version; each is asked about its own.

All three answer the same questions (what is READY, load beside, unload, probe), so readiness
checks, traffic shifts and deprecation do not care which one a release uses.
"""

from __future__ import annotations

import abc
import re

from llm_release.errors import SpecError, TritonError
from llm_release.triton_control import ProbeResult, TritonControl


class ServedVersions(abc.ABC):
    topology: str = "abstract"

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

    def __init__(self, triton: TritonControl):
        self.triton = triton

    def ready_versions(self, model: str) -> list[int]:
        return self.triton.ready_versions(model)

    def load(self, model: str, version: int) -> list[int]:
        return self.triton.load_versions(model, sorted(set(self.triton.ready_versions(model)) | {version}))

    def unload(self, model: str, version: int) -> list[int]:
        return self.triton.unload_versions(model, [version])

    def probe(self, model: str, version: int) -> ProbeResult:
        return self.triton.probe(model, version)


class ModelPerRelease(ServedVersions):
    """Release N of `m` is the Triton model `<m>_r<N>` (its own directory, version 1)."""

    topology = "model_per_release"

    def __init__(self, triton: TritonControl, *, suffix: str = "_r"):
        self.triton = triton
        self.suffix = suffix

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

    def __init__(self, tritons: dict[int, TritonControl]):
        self.tritons = dict(tritons)

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
        self._triton(version).load_versions(model, [version])
        return self.ready_versions(model)

    def unload(self, model: str, version: int) -> list[int]:
        self._triton(version).unload_versions(model, [version])
        return self.ready_versions(model)

    def probe(self, model: str, version: int) -> ProbeResult:
        return self._triton(version).probe(model, version)
