"""A freshly built engine as a candidate in a test environment, before it is published.

Golden prompts and the perf bench need the candidate served: it is installed into the test
environment's model repository (atomically, like a sync would) and loaded beside the versions
that serve there, without any traffic (nothing routes to it; checks reach it through its
version-pinned path). Afterwards it is unloaded and its files removed again, whatever the
checks said: a passed engine comes back through publish and sync, a failed one never should.
The stable version it is compared with is the one taking most of the gateway's traffic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields

from llm_release.errors import SpecError
from llm_release.metadata import verify_engine

LOG = logging.getLogger("llm_release.build.candidate")


@dataclass(frozen=True)
class Candidate:
    """Where checks reach a candidate and the stable version it is compared with."""

    model: str
    version: int
    environment: str
    triton_url: str
    triton_model: str  # the Triton model serving the candidate (model-per-release: <model>_r<N>)
    triton_version: int
    stable: int | None
    stable_triton_model: str | None
    stable_triton_version: int | None
    installed_by_us: bool
    builder: str
    max_input_len: int
    max_seq_len: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> "Candidate":
        """From install's result; other keys riding along (engine_dir, check results) are ignored."""
        return cls(**{f.name: doc[f.name] for f in fields(cls)})


def _triton_address(env, model: str, version: int) -> tuple[str, int]:
    if env.triton.topology == "model_per_release":
        return env.triton_model(model, version), 1
    return model, version


def stable_version(env, model: str, *, exclude: int | None = None) -> int | None:
    """The version taking most of the gateway's traffic; without routing, the newest READY one."""
    state = env.router_instance().get_state(model)
    if state is not None and state.weights:
        version, weight = max(state.weights.items(), key=lambda kv: (kv[1], kv[0]))
        if weight > 0 and version != exclude:
            return version
    ready = [v for v in env.served_versions().ready_versions(model) if v != exclude]
    return max(ready) if ready else None


def install_candidate(env, engine_dir, *, tokenizer_dir: str | None = None, python_models_dir: str | None = None,
                      log: logging.Logger = LOG) -> Candidate:
    """Install the engine in `env`'s model repository and load it beside what serves there.

    In the model-per-release topology a TensorRT-LLM engine becomes its release's ensemble
    (llm_release.trtllm_repo: needs the tokenizer, usually the checkpoint's directory, and the
    pre/post-processing models of the serving image's TensorRT-LLM); any other engine is the
    release model `<model>_r<N>` itself, version 1.
    """
    from llm_release.model_repo import install_version, installed_versions

    meta = verify_engine(engine_dir)
    repo = env.triton.model_repository
    if not repo:
        raise SpecError("triton.model_repository", f"environment {env.key} names no model repository",
                        "give the path the test environment's Triton reads")
    if env.triton.topology == "deployment_per_version":
        raise SpecError("environment", f"{env.key} runs a deployment per version: a candidate cannot be loaded "
                        "beside the others here", "test candidates in an environment with the versions or "
                        "model_per_release topology")
    started = time.monotonic()
    already = meta.version in installed_versions(repo, meta.model) if env.triton.topology == "versions" else False
    if env.triton.topology == "model_per_release" and meta.builder == "tensorrt-llm":
        from llm_release.trtllm_repo import install_release_repository, render_release_repository

        for name, value in (("tokenizer_dir", tokenizer_dir), ("python_models_dir", python_models_dir)):
            if not value:
                raise SpecError(name, f"is needed to serve the TensorRT-LLM engine {meta.model} v{meta.version}",
                                "set it in the nightly settings (docs/builds.md)")
        files = render_release_repository(meta, model=meta.model, release=meta.version, engine_dir=str(engine_dir),
                                          tokenizer_dir=tokenizer_dir, python_models_dir=python_models_dir,
                                          suffix=env.triton.release_suffix)
        install_release_repository(repo, files)
    elif env.triton.topology == "model_per_release":
        release_model = env.triton_model(meta.model, meta.version)
        already = 1 in installed_versions(repo, release_model)
        install_version(engine_dir, repo, model_name=release_model, version=1)
    else:
        install_version(engine_dir, repo, model_name=meta.model, version=meta.version)
    stable = stable_version(env, meta.model, exclude=meta.version)
    try:
        ready = env.served_versions().load(meta.model, meta.version)
        if meta.version not in ready:
            raise SpecError("version", f"candidate {meta.model} v{meta.version} did not become READY (READY: {ready})",
                            "see Triton's log")
    except Exception:
        # A candidate that cannot serve leaves nothing behind: the next night may build this
        # version number again from other inputs.
        if not already:
            _remove_files(env, meta.model, meta.version, builder=meta.builder)
        raise
    name, tversion = _triton_address(env, meta.model, meta.version)
    sname, sversion = _triton_address(env, meta.model, stable) if stable else (None, None)
    log.info("candidate %s v%d READY in %s beside %s after %.1f s", meta.model, meta.version, env.key,
             f"stable v{stable}" if stable else "no stable version (first release)", time.monotonic() - started)
    return Candidate(model=meta.model, version=meta.version, environment=env.key, triton_url=env.triton.url,
                     triton_model=name, triton_version=tversion, stable=stable, stable_triton_model=sname,
                     stable_triton_version=sversion, installed_by_us=not already, builder=meta.builder,
                     max_input_len=meta.max_input_len, max_seq_len=meta.max_seq_len)


def _remove_files(env, model: str, version: int, *, builder: str) -> None:
    """Take what install put in the repository out again (each model directory atomically)."""
    from llm_release.model_repo import remove_version

    repo = env.triton.model_repository
    if env.triton.topology == "versions":
        remove_version(repo, model, version)
        return
    if builder != "tensorrt-llm":
        remove_version(repo, env.triton_model(model, version), 1)
        return
    import os
    import secrets
    import shutil
    from pathlib import Path

    from llm_release.trtllm_repo import release_names

    for name in release_names(model, version, suffix=env.triton.release_suffix).all():
        target = Path(repo) / name
        if target.exists():
            doomed = Path(repo) / f".tmp-removed-{name}-{secrets.token_hex(4)}"
            os.rename(target, doomed)
            shutil.rmtree(doomed)


def retire_candidate(env, candidate: Candidate, *, log: logging.Logger = LOG) -> str:
    """Unload the candidate and remove the files we installed, unless traffic reaches it."""
    state = env.router_instance().get_state(candidate.model)
    if state is not None and state.weights.get(candidate.version, 0) > 0:
        return f"{candidate.model} v{candidate.version} takes traffic now ({state.describe()}): left in place"
    served = env.served_versions()
    if candidate.version in served.ready_versions(candidate.model):
        served.unload(candidate.model, candidate.version)
    if candidate.installed_by_us:
        _remove_files(env, candidate.model, candidate.version, builder=candidate.builder)
        what = "unloaded and removed"
    else:
        what = "unloaded (its files stay: they were there before the checks)"
    log.info("candidate %s v%d %s from %s", candidate.model, candidate.version, what, env.key)
    return f"{candidate.model} v{candidate.version} {what}"
