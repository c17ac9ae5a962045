"""Triton model control over its HTTP API: load given versions, wait for READY, probe.

Triton has no "version" load parameter. Loading exactly the versions we want means sending
the model's full config with `version_policy: {specific: {versions: [...]}}`; the override
sticks until the files change, so it is sent on every load. Loading never drops a version
that we were not asked to drop: callers pass the full set that must serve.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from llm_release.errors import ModelNotFound, SpecError, TritonError

READY = "READY"


@dataclass(frozen=True)
class ProbeResult:
    model: str
    version: int
    text: str
    latency_ms: float


def _check_versions(versions) -> list[int]:
    out = []
    for v in versions:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError("versions", f"{v!r} is not a positive integer", "Triton versions are 1, 2, 3, ...")
        out.append(v)
    if not out:
        raise SpecError("versions", "no version given", "name at least one version to load")
    return sorted(set(out))


def config_from_pbtxt(text: str) -> dict:
    """Parse a config.pbtxt into the JSON form Triton's load API takes as `config`."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    try:
        message = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise TritonError(f"config.pbtxt is not a valid Triton model config: {exc}") from exc
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class TritonControl:
    """One Triton server's repository and inference API."""

    def __init__(self, base_url: str, *, timeout_s: float = 600.0, model_repository: str | None = None):
        # Engine loads take minutes: never use a 60 s client timeout for them.
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.model_repository = Path(model_repository) if model_repository else None
        self._session = requests.Session()

    # -- plumbing -----------------------------------------------------------------------
    def _post(self, path: str, body: dict | None = None, *, timeout: float | None = None) -> requests.Response:
        try:
            return self._session.post(f"{self.base_url}{path}", json=body or {}, timeout=timeout or self.timeout_s)
        except requests.RequestException as exc:
            raise TritonError(f"Triton at {self.base_url} unreachable: {exc}") from exc

    def _get(self, path: str, *, timeout: float = 10.0) -> requests.Response:
        try:
            return self._session.get(f"{self.base_url}{path}", timeout=timeout)
        except requests.RequestException as exc:
            raise TritonError(f"Triton at {self.base_url} unreachable: {exc}") from exc

    @staticmethod
    def _error_text(resp: requests.Response) -> str:
        try:
            return resp.json().get("error", resp.text)
        except ValueError:
            return resp.text

    # -- state ---------------------------------------------------------------------------
    def is_live(self) -> bool:
        try:
            return self._get("/v2/health/live", timeout=3).status_code == 200
        except TritonError:
            return False

    def repository_index(self) -> list[dict]:
        resp = self._post("/v2/repository/index", {}, timeout=30)
        if resp.status_code != 200:
            raise TritonError(f"repository index failed: {self._error_text(resp)}")
        return resp.json()

    def version_states(self, model: str) -> dict[int, tuple[str, str]]:
        """version -> (state, reason) for every version Triton knows of this model."""
        states = {}
        for entry in self.repository_index():
            if entry.get("name") == model and entry.get("version"):
                states[int(entry["version"])] = (entry.get("state", "UNKNOWN"), entry.get("reason", ""))
        return states

    def _in_repository(self, model: str) -> bool:
        """Whether Triton's repository index knows the model at all (loaded or not)."""
        return any(entry.get("name") == model for entry in self.repository_index())

    def ready_versions(self, model: str) -> list[int]:
        return sorted(v for v, (state, _) in self.version_states(model).items() if state == READY)

    def is_version_ready(self, model: str, version: int) -> bool:
        return self._get(f"/v2/models/{model}/versions/{version}/ready", timeout=5).status_code == 200

    # -- config --------------------------------------------------------------------------
    def model_config(self, model: str) -> dict:
        """The config of a loaded model, or the repository's config.pbtxt when we can read it."""
        resp = self._get(f"/v2/models/{model}/config")
        if resp.status_code == 200:
            return resp.json()
        if self.model_repository:
            pbtxt = self.model_repository / model / "config.pbtxt"
            if pbtxt.exists():
                return config_from_pbtxt(pbtxt.read_text())
            raise ModelNotFound(f"model {model!r} is not in the model repository {self.model_repository} "
                                f"(no {pbtxt}); install an engine for it first")
        if not self._in_repository(model):
            raise ModelNotFound(f"model {model!r} is not in Triton's model repository at {self.base_url}; "
                                "install an engine for it first")
        raise TritonError(
            f"no config for model {model!r}: it is not loaded and no readable config.pbtxt "
            "(set model_repository on the Triton connection, or pass the config)", permanent=True)

    # -- load / unload -------------------------------------------------------------------
    def load_versions(self, model: str, versions, *, config: dict | None = None, wait_s: float = 600.0) -> list[int]:
        """Make exactly `versions` of `model` loaded (READY) and return them.

        Versions not named are unloaded by Triton after the named ones are ready; so to add a
        version beside the serving one, name both. Loading what is loaded changes nothing.
        """
        versions = _check_versions(versions)
        self.require_version_dirs(model, versions)
        if self.ready_versions(model) == versions and config is None:
            return versions  # idempotent: already exactly this set
        base = dict(config or self.model_config(model))
        base["name"] = model
        base["version_policy"] = {"specific": {"versions": versions}}
        resp = self._post(f"/v2/repository/models/{model}/load", {"parameters": {"config": json.dumps(base)}},
                          timeout=wait_s)
        if resp.status_code != 200:
            if not self._in_repository(model):
                raise ModelNotFound(f"loading {model} versions {versions} failed: {model!r} is not in Triton's "
                                    f"model repository ({self._error_text(resp)})")
            raise TritonError(f"loading {model} versions {versions} failed: {self._error_text(resp)}")
        # Load blocks until done, so anything not READY now failed (Triton skips a specific
        # version without a directory and still answers 200): give the index a moment, no more.
        self.wait_ready(model, versions, timeout_s=5.0)
        return versions

    def require_version_dirs(self, model: str, versions: list[int]) -> None:
        """Where the repository is readable, refuse a missing version directory before loading."""
        if not self.model_repository:
            return
        model_dir = self.model_repository / model
        missing = [v for v in versions if not (model_dir / str(v)).is_dir()]
        if missing:
            raise ModelNotFound(
                f"{model}: no version directory for {missing} in {model_dir}; install the engine first")

    def unload_versions(self, model: str, versions, *, wait_s: float = 600.0) -> list[int]:
        """Stop serving `versions` and keep the other READY ones, by reloading with the reduced
        policy (Triton has no per-version unload). Unloading the last version unloads the
        model, and we wait until Triton reports it unloaded, so its memory counts as free.
        Returns the versions still READY."""
        drop = set(_check_versions(versions))
        keep = [v for v in self.ready_versions(model) if v not in drop]
        if keep:
            return self.load_versions(model, keep, wait_s=wait_s)
        resp = self._post(f"/v2/repository/models/{model}/unload", {}, timeout=wait_s)
        if resp.status_code != 200:
            raise TritonError(f"unloading {model} failed: {self._error_text(resp)}")
        deadline = time.monotonic() + wait_s
        while any(state not in ("UNAVAILABLE",) for state, _ in self.version_states(model).values()):
            if time.monotonic() > deadline:
                raise TritonError(f"{model}: still not unloaded after {wait_s:.0f} s: {self.version_states(model)}")
            time.sleep(0.2)
        return []

    def wait_ready(self, model: str, versions, *, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.version_states(model)
            missing = [v for v in versions if states.get(v, ("UNKNOWN", ""))[0] != READY]
            if not missing:
                return
            if time.monotonic() > deadline:
                detail = ", ".join(f"v{v}: {states.get(v, ('UNKNOWN', 'not in repository index'))}" for v in missing)
                raise TritonError(f"{model}: not READY after {timeout_s:.0f} s: {detail}")
            time.sleep(0.2)

    # -- inference -----------------------------------------------------------------------
    def generate(self, model: str, text: str, *, version: int | None = None, max_tokens: int = 16,
                 base_url: str | None = None, timeout_s: float = 60.0, **params) -> dict:
        """One non-streaming generation through Triton's generate endpoint (or a gateway)."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/generate"
        body = {"text_input": text, "max_tokens": max_tokens, **params}
        try:
            resp = self._session.post(f"{(base_url or self.base_url).rstrip('/')}{path}", json=body, timeout=timeout_s)
        except requests.RequestException as exc:
            raise TritonError(f"generate on {model} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise TritonError(f"generate on {model} v{version or '*'} failed ({resp.status_code}): {self._error_text(resp)}")
        return resp.json()

    def probe(self, model: str, version: int, *, prompt: str = "Triton release probe:", max_tokens: int = 8) -> ProbeResult:
        """A real inference against exactly this version: health endpoints can say 200 while a
        Python-backend stub is dead, so only a generated answer counts."""
        started = time.perf_counter()
        answer = self.generate(model, prompt, version=version, max_tokens=max_tokens)
        latency_ms = (time.perf_counter() - started) * 1000
        served = str(answer.get("model_version", ""))
        if served != str(version):
            raise TritonError(f"probe of {model} v{version} was answered by version {served!r}")
        text = answer.get("text_output")
        if not isinstance(text, str) or not text:
            raise TritonError(f"probe of {model} v{version} returned no text: {answer}")
        return ProbeResult(model=model, version=version, text=text, latency_ms=round(latency_ms, 2))
