"""Load a model version in Triton beside the serving ones, then prove it answers.

Thin: arguments, one call into llm_release.triton_control, a result for XCom and a sentence in
the task log. Safe to retry: loading a set that is already loaded changes nothing. A model or
version that is not in the repository fails at once (no retries); Triton being unreachable
retries with backoff (llm_release_airflow.retry_policy).

Given `runtime` (what this Triton runs: image, trtllm_version, gpu_arch, metrics_url, as in an
environment's `triton.runtime`), the version's metadata.json is checked against it first
(llm_release.provenance): an engine built for another runtime fails at once, before Triton is
asked to load it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property

from llm_release_airflow.retry_policy import ReleaseOperator


def _as_bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class TritonLoadOperator(ReleaseOperator):
    """Make `version` of `model` READY without unloading the versions that serve traffic.

    :param model: Triton model name.
    :param version: version to load (a positive integer).
    :param keep_serving: keep every version that is READY now (default); False loads only `version`.
    :param probe: after loading, send a real inference to exactly this version.
    :param load_timeout: seconds to wait for READY.
    :param topology: "versions" (version directories of one model) or "model_per_release"
        (TensorRT-LLM: release N is the model ``<model>_r<N>``).
    :param runtime: what this Triton runs, for the provenance gate: a dict with any of image,
        trtllm_version, gpu_arch, metrics_url (None: not checked). Needs the connection's
        model_repository, where the version's metadata.json is read.
    :param triton_conn_id: connection of type ``triton``.
    """

    template_fields: Sequence[str] = ("model", "version", "keep_serving", "probe", "topology", "runtime")
    ui_color = "#76b900"

    def __init__(self, *, model: str, version, keep_serving=True, probe=True, load_timeout: float = 600.0,
                 topology: str = "versions", runtime: dict | None = None, triton_conn_id: str = "triton_default",
                 **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.version = version
        self.keep_serving = keep_serving
        self.probe = probe
        self.load_timeout = load_timeout
        self.topology = topology
        self.runtime = runtime
        self.triton_conn_id = triton_conn_id

    @cached_property
    def hook(self):
        from llm_release_airflow.hooks.triton import TritonHook

        return TritonHook(triton_conn_id=self.triton_conn_id)

    def execute(self, context) -> dict:
        from llm_release.environments import TritonRuntime
        from llm_release.errors import SpecError
        from llm_release.provenance import runtime_reader
        from llm_release.serving import ModelPerRelease, PlainVersions
        from llm_release.versions import parse_version

        version = parse_version(self.version)
        triton = self.hook.get_conn()
        runtime = self.hook.runtime()  # the connection's runtime fields, when it has any
        if self.runtime:
            declared = TritonRuntime.from_dict(self.runtime, "runtime")
            runtime = runtime_reader(triton.base_url, metrics_url=declared.metrics_url, declared=declared)
        started = time.monotonic()
        if self.topology == "model_per_release":
            served = ModelPerRelease(triton, runtime=runtime)
            name = served.name(self.model, version)
            serving = served.ready_versions(self.model)
            self.log.info("Loading %s beside %s", name, _versions(serving))
            ready = served.load(self.model, version)
            self.log.info("%s v%s (Triton model %s) is READY after %.1f s; releases READY now: %s",
                          self.model, version, name, time.monotonic() - started, _versions(ready))
            result = {"model": self.model, "version": version, "ready_versions": ready, "previously_ready": serving}
            if _as_bool(self.probe):
                probe = served.probe(self.model, version)
                self.log.info("Probe of %s answered in %.1f ms: %r", name, probe.latency_ms, probe.text)
                result["probe"] = probe.__dict__
            return result
        if self.topology != "versions":
            raise SpecError("topology", f"{self.topology!r} is not supported here",
                            "use versions or model_per_release (a deployment per version loads on its own Triton)")
        PlainVersions(triton, runtime=runtime).check_provenance(triton, self.model, version)
        serving = triton.ready_versions(self.model)
        wanted = sorted(set(serving) | {version}) if _as_bool(self.keep_serving) else [version]
        self.log.info("Loading %s versions %s (serving now: %s)", self.model, wanted, _versions(serving))
        ready = triton.load_versions(self.model, wanted, wait_s=self.load_timeout)
        kept = [v for v in serving if v in ready and v != version]
        self.log.info("%s v%s is READY%s after %.1f s; READY now: %s%s", self.model, version,
                      f" beside {_versions(kept)}" if kept else "", time.monotonic() - started, _versions(ready),
                      " (it was already loaded)" if version in serving else "")
        result = {"model": self.model, "version": version, "ready_versions": ready, "previously_ready": serving}
        if _as_bool(self.probe):
            probe = triton.probe(self.model, version)
            self.log.info("Probe of %s v%s answered in %.1f ms: %r", self.model, version, probe.latency_ms, probe.text)
            result["probe"] = probe.__dict__
        return result


def _versions(versions) -> str:
    return ", ".join(f"v{v}" for v in versions) if versions else "none"


class TritonProbeOperator(ReleaseOperator):
    """Send a real inference to exactly one version and fail unless it answers with text.

    Health endpoints can answer 200 while a Python-backend stub is dead; only an answer counts.
    """

    template_fields: Sequence[str] = ("model", "version", "prompt")
    ui_color = "#76b900"

    def __init__(self, *, model: str, version, prompt: str = "Triton release probe:", max_tokens: int = 8,
                 triton_conn_id: str = "triton_default", **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.version = version
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.triton_conn_id = triton_conn_id

    def execute(self, context) -> dict:
        from llm_release.versions import parse_version
        from llm_release_airflow.hooks.triton import TritonHook

        version = parse_version(self.version)
        probe = TritonHook(triton_conn_id=self.triton_conn_id).get_conn().probe(
            self.model, version, prompt=self.prompt, max_tokens=self.max_tokens)
        self.log.info("%s v%s answered a real inference in %.1f ms: %r", self.model, version, probe.latency_ms,
                      probe.text)
        return probe.__dict__
