"""A fault-injecting variant of the reference engine, for tests and benchmarks only.

The canary judge, the streaming probe and the release DAGs have to be shown to catch a bad
release, so we need versions that misbehave on purpose: some requests fail, some are refused,
answers come late or tokens come slowly, possibly only after a while. Such a version is the
reference engine as built plus three files in its version directory:

- `model.py`: the fault wrapper (`backend/faulty_model.py`), which loads the production model
  from `reference_model.py` by file path and serves through it, so a request that draws no
  fault gets exactly the production answer;
- `reference_model.py`: the engine's own production `model.py`, byte for byte;
- `faults.json`: the `Faults` below.

The production `model.py` carries no fault logic. metadata.json of the variant lists every
file with its digest, as for any engine, and records `<builder>+faults` as its builder, so the
install is verified like any other and nobody mistakes the variant for a release.

What clients see (Triton 2.51, HTTP `/generate` and `/generate_stream`, directly and through
the Envoy gateway): any error response of a decoupled Python model, whatever its TritonError
code, arrives as HTTP 400 with `{"error": <message>}` (an SSE `data:` line on the stream
endpoint). So injected server errors and refusals both count as 4xx at the gateway; they differ
by message ("internal error: ..." against "prompt rejected: ...") and by TritonError code
(INTERNAL against INVALID_ARG, kept for gRPC clients and for Triton releases that map codes to
HTTP statuses). Only errors Triton raises before a request reaches the model (unknown version:
404, full queue: 503) get other statuses.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from llm_release.errors import SpecError
from llm_release.fsutil import write_durably
from llm_release.metadata import (check_model_name, check_version, engine_files, sha256_bytes,
                                  utc_now, verify_engine, write_metadata)
from llm_release.model_repo import _copy_file, install_staged

FAULTS_FILE = "faults.json"
MODEL_FILE = "model.py"
#: The production model.py, copied beside the wrapper under this name.
REFERENCE_MODEL_FILE = "reference_model.py"
FAULTY_MODEL_SOURCE = Path(__file__).parent / "backend" / "faulty_model.py"
BUILDER_SUFFIX = "+faults"


@dataclass(frozen=True)
class Faults:
    """What the variant does wrong. The default is no fault at all.

    :param error_rate: share of requests answered with a server error (0..1).
    :param refuse_rate: share answered with a client-error refusal, "prompt rejected" (0..1);
        one draw per request decides, so error_rate + refuse_rate must not exceed 1.
    :param added_latency_ms: waited before the first token (streaming) or the answer, on every
        request once faults are on, failed ones included (a slow server is slow for all).
    :param slow_factor: generation takes this many times as long (>= 1): after computing each
        token the model waits (slow_factor - 1) times the time it took.
    :param onset_s: faults start for requests arriving this many seconds after the model
        instance initialized; before that the variant behaves like production (0: at once).
    :param seed: seeds each instance's draws, so a run is reproducible enough for tests.
    """

    error_rate: float = 0.0
    refuse_rate: float = 0.0
    added_latency_ms: float = 0.0
    slow_factor: float = 1.0
    onset_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "refuse_rate"):
            _check_number(name, getattr(self, name), low=0.0, high=1.0)
        if self.error_rate + self.refuse_rate > 1.0 + 1e-12:
            raise SpecError("refuse_rate", f"error_rate {self.error_rate} + refuse_rate "
                            f"{self.refuse_rate} is over 1", "make the two shares add up to 1 at most")
        _check_number("added_latency_ms", self.added_latency_ms, low=0.0)
        _check_number("slow_factor", self.slow_factor, low=1.0)
        _check_number("onset_s", self.onset_s, low=0.0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError("seed", f"{self.seed!r} is not a non-negative integer", "use a seed like 0 or 42")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Faults":
        """Parse faults.json content; an unknown key is refused rather than silently ignored."""
        if not isinstance(data, dict):
            raise SpecError("faults", f"expected a mapping, got {type(data).__name__}",
                            "pass the faults as a JSON object")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise SpecError(unknown[0], "is not a fault setting", f"known settings are {', '.join(names)}")
        return cls(**data)


def _check_number(name: str, value: Any, *, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(name, f"{value!r} is not a finite number", "give a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise SpecError(name, f"{value!r} is out of range", f"use a value {bound}")


def faults_bytes(faults: Faults) -> bytes:
    """The canonical faults.json: sorted keys, so equal faults give equal bytes (and digests)."""
    return (json.dumps(faults.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_faults(version_dir: str | os.PathLike) -> Faults | None:
    """The faults of an installed version directory, or None for an ordinary version."""
    path = Path(version_dir) / FAULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SpecError("faults", f"{path} is not readable JSON: {exc}", "reinstall the version") from exc
    return Faults.from_dict(data)


def install_faulty_version(engine_dir, repo_root, faults: Faults, *, model_name: str,
                           version: int) -> Path:
    """Install the engine of `engine_dir` as `<repo_root>/<model_name>/<version>`, serving
    through the fault wrapper with `faults`; return the version directory.

    The files are staged and made visible by model_repo.install_staged, atomically and
    verified, like any install. The expected metadata is computed before staging from the
    verified source engine and the two new files, so the staged copy is checked against
    digests that were not taken from the copy itself. Installing identical content again is a
    no-op; other content under an installed version is refused (SpecError on "version").
    """
    if not isinstance(faults, Faults):
        raise SpecError("faults", f"expected Faults, got {type(faults).__name__}",
                        "pass llm_release.engine.faults.Faults(...)")
    model = check_model_name(model_name)
    version = check_version(version)
    source = Path(engine_dir)
    meta = verify_engine(source)
    if MODEL_FILE not in meta.files:
        raise SpecError("engine_dir", f"{source} has no {MODEL_FILE}: only engines served by the "
                        "reference Python model can be wrapped", "build it with llm_release.engine.builder")
    clashes = sorted({REFERENCE_MODEL_FILE, FAULTS_FILE} & set(meta.files))
    if clashes:
        raise SpecError("engine_dir", f"{source} already holds {clashes[0]}; it is a fault variant "
                        "or not a reference engine", "wrap the engine as built, not an installed variant")
    wrapper = FAULTY_MODEL_SOURCE.read_bytes()
    settings = faults_bytes(faults)
    files = {rel: digest for rel, digest in meta.files.items() if rel != MODEL_FILE}
    files[MODEL_FILE] = sha256_bytes(wrapper)
    files[REFERENCE_MODEL_FILE] = meta.files[MODEL_FILE]
    files[FAULTS_FILE] = sha256_bytes(settings)
    expected = replace(meta, builder=meta.builder + BUILDER_SUFFIX, created_at=utc_now(),
                       files=dict(sorted(files.items())))

    def stage(tmp: Path) -> None:
        for rel in engine_files(source):
            if rel != MODEL_FILE:
                _copy_file(source / rel, tmp / rel)
        _copy_file(source / MODEL_FILE, tmp / REFERENCE_MODEL_FILE)
        _copy_file(FAULTY_MODEL_SOURCE, tmp / MODEL_FILE)
        write_durably(tmp / FAULTS_FILE, settings)
        write_metadata(tmp, expected)

    return install_staged(repo_root, model, version, stage, expected=expected)

