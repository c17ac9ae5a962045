"""What runs inside the build pod: the planned steps, then metadata.json, then an atomic rename.

`llm-release engine build-trtllm --request '<json>'` calls run_build. It

1. reads the GPUs (`nvidia-smi --query-gpu=compute_cap`) and refuses to start without one, with
   fewer than tp*pp, or with an architecture the precision needs a newer one for;
2. hashes the source checkpoint (`directory_digest`) and looks at engine_dir: an intact engine
   built from the same inputs (model, version, build parameters, checkpoint digest, GPU
   architecture, image) makes the run a no-op, so a retried pod does not rebuild; anything else
   there is refused;
3. runs each step (argv lists, no shell) in a scratch directory beside engine_dir, streaming
   its output line by line with the elapsed time; a failed step raises BuildStepFailed naming
   the step, its exit code and the tail of its output, and leaves no engine_dir;
4. records `trtllm-build --help` in the engine (flags change between releases), reads the
   TensorRT-LLM version from the engine's config.json, writes metadata.json (builder
   "tensorrt-llm", every file hashed), renames the engine into engine_dir;
5. prints `LLM_RELEASE_RESULT {json}` as its last line: the Airflow operator parses it.

Subprocesses run with the Hugging Face hub offline (HF_HUB_OFFLINE etc.): a build reads only
the checkpoint and calibration data it was given.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from llm_release.build.trtllm import (ENGINE_SUBDIR, TrtllmBuildRequest, check_gpu_arch,
                                      first_script, plan_commands)
from llm_release.errors import ChecksumMismatch, LLMReleaseError, SpecError
from llm_release.fsutil import fsync_dir
from llm_release.metadata import (EngineMetadata, hash_engine_files, utc_now, verify_engine,
                                  write_metadata)

LOG = logging.getLogger("llm_release.build")
BUILDER = "tensorrt-llm"
RESULT_PREFIX = "LLM_RELEASE_RESULT "
HELP_FILE = "trtllm-build-help.txt"
IMAGE_ENV = "LLM_RELEASE_TRITON_IMAGE"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1"}
TAIL_LINES = 40
_WORK_TOKEN = "$WORK"

#: run(argv, on_line=callback, env=mapping) -> exit code; each output line goes to on_line.
Runner = Callable[..., int]


class BuildError(LLMReleaseError):
    """The build pod cannot build (no GPU, a missing tool, an engine without its version)."""


class BuildStepFailed(BuildError):
    """A planned step exited non-zero."""

    def __init__(self, step: str, code: int, tail: list[str]):
        self.step, self.code, self.tail = step, code, tail
        shown = "\n".join(tail) if tail else "(no output)"
        super().__init__(f"step {step!r} failed with exit code {code}; last output:\n{shown}")


def subprocess_runner(argv: list[str], *, on_line: Callable[[str], None],
                      env: dict[str, str] | None = None) -> int:
    """Run argv (no shell), passing each line of stdout+stderr to on_line; return the exit code."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, text=True, errors="replace",
                                bufsize=1)
    except FileNotFoundError:
        on_line(f"{argv[0]}: command not found")
        return 127
    assert proc.stdout is not None
    for line in proc.stdout:
        on_line(line.rstrip("\n"))
    return proc.wait()


def _print_log(line: str) -> None:
    print(line, flush=True)


def directory_digest(path: str | os.PathLike) -> str:
    """"sha256:<hex>" over every file's relative path and content hash, in sorted order.

    Same scheme as the reference checkpoint digest, but streamed: HF checkpoints are tens of GB.
    Symlinks are followed (HF caches link blobs); hidden files count like any other.
    """
    root = Path(path)
    if not root.is_dir():
        raise SpecError("checkpoint_dir", f"{root} is not a directory",
                        "point at the Hugging Face checkpoint directory inside the pod")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise SpecError("checkpoint_dir", f"{root} holds no files", "point at a checkpoint")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        inner = hashlib.sha256()
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                inner.update(block)
        digest.update(inner.digest())
    return "sha256:" + digest.hexdigest()


def read_gpus(run: Runner, env: dict[str, str]) -> list[str]:
    """SM architecture of each visible GPU, e.g. ["sm90", "sm90"]; [] when none is visible."""
    lines: list[str] = []
    code = run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
               on_line=lines.append, env=env)
    if code != 0:
        return []
    archs = []
    for line in lines:
        value = line.strip()
        if not value:
            continue
        major, _, minor = value.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise BuildError(f"nvidia-smi reported compute capability {value!r}")
        archs.append(f"sm{int(major)}{int(minor)}")
    return archs


def _same_inputs(existing: EngineMetadata, wanted: dict[str, Any]) -> list[str]:
    """Names of the build inputs in which an existing engine differs from this request."""
    have = existing.to_dict()
    return sorted(k for k, v in wanted.items() if have.get(k) != v)


def run_build(request: TrtllmBuildRequest, *, run: Runner = subprocess_runner,
              log: Callable[[str], None] = _print_log,
              environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Build request's engine into request.engine_dir; return (and log) the result record."""
    started = time.monotonic()
    base_env = dict(os.environ if environ is None else environ)
    env = {**base_env, **OFFLINE_ENV}
    params = request.params
    engine_dir = Path(request.engine_dir)

    archs = read_gpus(run, env)
    if not archs:
        raise BuildError("no GPU is visible in this pod (nvidia-smi found none): an engine must "
                         "be built on the GPU architecture it will serve on")
    if len(archs) < params.world_size:
        raise SpecError("tp_size", f"tp_size * pp_size = {params.world_size} needs that many "
                        f"GPUs; the pod sees {len(archs)}", "request more GPUs for the pod")
    if len(set(archs[:params.world_size])) != 1:
        raise BuildError(f"the pod's GPUs differ in architecture ({', '.join(archs)})")
    gpu_arch = archs[0]
    check_gpu_arch(params, gpu_arch)

    image = base_env.get(IMAGE_ENV) or request.image
    log(f"building {request.model} v{request.version} ({params.precision}, tp={params.tp_size}, "
        f"pp={params.pp_size}) on {len(archs)} x {gpu_arch} into {engine_dir}")
    checkpoint_digest = directory_digest(request.checkpoint_dir)
    build_params = {**params.to_dict(), "model_family": request.model_family}
    wanted = {"model": request.model, "version": request.version, "builder": BUILDER,
              "gpu_arch": gpu_arch, "triton_image": image,
              "source_checkpoint_digest": checkpoint_digest}

    if engine_dir.exists() or engine_dir.is_symlink():
        meta = _existing_engine(engine_dir, wanted, build_params)
        return _finish(log, request, meta, engine_dir, started, reused=True)

    script = first_script(request)
    if not Path(script).is_file():
        raise SpecError("examples_dir", f"{script} does not exist in this image",
                        f"put the TensorRT-LLM examples in {request.examples_dir} or set "
                        "examples_dir to where the image has them")

    engine_dir.parent.mkdir(parents=True, exist_ok=True)
    work = engine_dir.parent / f".{engine_dir.name}.tmp-{secrets.token_hex(6)}"
    work.mkdir()
    try:
        steps = plan_commands(request, work_dir=str(work))
        for step in steps:
            _run_step(run, step.name, step.argv, env, log, started)
        built = work / ENGINE_SUBDIR
        _record_help(run, env, built / HELP_FILE)
        trtllm_version = _engine_version(built, params.world_size)
        build_params["commands"] = [[a.replace(str(work), _WORK_TOKEN) for a in s.argv]
                                    for s in steps]
        meta = EngineMetadata(
            model=request.model, version=request.version, precision=params.precision,
            max_batch_size=params.max_batch_size, max_input_len=params.max_input_len,
            max_seq_len=params.max_seq_len, tp_size=params.tp_size, pp_size=params.pp_size,
            gpu_arch=gpu_arch, builder=BUILDER, trtllm_version=trtllm_version,
            triton_image=image, build_params=build_params,
            source_checkpoint_digest=checkpoint_digest, created_at=utc_now(),
            files=hash_engine_files(built))
        write_metadata(built, meta)
        fsync_dir(built)
        try:
            os.rename(built, engine_dir)
        except OSError:
            if engine_dir.exists():  # another pod finished first: same inputs or refuse
                meta = _existing_engine(engine_dir, wanted, build_params)
                return _finish(log, request, meta, engine_dir, started, reused=True)
            raise
        fsync_dir(engine_dir.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _finish(log, request, meta, engine_dir, started, reused=False)


def _run_step(run: Runner, name: str, argv: list[str], env: dict[str, str],
              log: Callable[[str], None], started: float) -> None:
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    step_started = time.monotonic()
    log(f"[{time.monotonic() - started:8.1f}s] step {name}: {' '.join(argv)}")

    def on_line(line: str) -> None:
        tail.append(line)
        log(f"[{time.monotonic() - started:8.1f}s] {name} | {line}")

    code = run(argv, on_line=on_line, env=env)
    if code != 0:
        log(f"[{time.monotonic() - started:8.1f}s] step {name} failed with exit code {code}")
        raise BuildStepFailed(name, code, list(tail))
    log(f"[{time.monotonic() - started:8.1f}s] step {name} done in "
        f"{time.monotonic() - step_started:.1f} s")


def _record_help(run: Runner, env: dict[str, str], path: Path) -> None:
    """`trtllm-build --help` beside the engine: the flags this engine was built against."""
    lines: list[str] = []
    code = run(["trtllm-build", "--help"], on_line=lines.append, env=env)
    text = "\n".join(lines) + "\n"
    if code != 0 or "--checkpoint_dir" not in text:
        raise BuildError(f"trtllm-build --help failed (exit code {code}); cannot record the "
                         "flags this engine was built with")
    path.write_text(text, encoding="utf-8")


def _engine_version(engine: Path, world_size: int) -> str:
    """The TensorRT-LLM version trtllm-build wrote into config.json, after checking the ranks."""
    try:
        config = json.loads((engine / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"trtllm-build left no readable {engine}/config.json ({exc})") from exc
    version = config.get("version") if isinstance(config, dict) else None
    if not isinstance(version, str) or not version.strip():
        raise BuildError(f"{engine}/config.json has no TensorRT-LLM 'version'")
    missing = [f"rank{r}.engine" for r in range(world_size) if not (engine / f"rank{r}.engine").is_file()]
    if missing:
        raise BuildError(f"trtllm-build did not write {', '.join(missing)} in {engine}")
    return version


def _existing_engine(engine_dir: Path, wanted: dict[str, Any],
                     build_params: dict[str, Any]) -> EngineMetadata:
    try:
        existing = verify_engine(engine_dir)
    except (SpecError, ChecksumMismatch) as exc:
        raise SpecError("engine_dir", f"{engine_dir} already exists and is not an intact engine "
                        f"({exc})", "choose a new engine_dir or remove it") from exc
    differ = _same_inputs(existing, wanted)
    recorded = {k: v for k, v in existing.build_params.items() if k != "commands"}
    if recorded != build_params:
        differ.append("build_params")
    if differ:
        raise SpecError("engine_dir", f"{engine_dir} already holds a different build (differs in "
                        f"{', '.join(sorted(differ))})", "choose a new engine_dir or remove it")
    return existing


def _finish(log: Callable[[str], None], request: TrtllmBuildRequest, meta: EngineMetadata,
            engine_dir: Path, started: float, *, reused: bool) -> dict[str, Any]:
    size = sum((engine_dir / rel).stat().st_size for rel in meta.files)
    result = {"model": meta.model, "version": meta.version, "engine_dir": str(engine_dir),
              "gpu_arch": meta.gpu_arch, "trtllm_version": meta.trtllm_version,
              "triton_image": meta.triton_image, "precision": meta.precision,
              "files": len(meta.files), "bytes": size,
              "seconds": round(time.monotonic() - started, 3), "reused": reused}
    if reused:
        log(f"an identical build of {request.model} v{request.version} is already at "
            f"{engine_dir}; nothing to do")
    else:
        log(f"built {meta.model} v{meta.version} into {engine_dir}: {len(meta.files)} files, "
            f"{size} bytes, {result['seconds']} s")
    log(RESULT_PREFIX + json.dumps(result, sort_keys=True))
    return result


def parse_result_line(line: str) -> dict[str, Any] | None:
    """The result record from a log line, or None when the line is not one."""
    if not line.startswith(RESULT_PREFIX):
        return None
    return json.loads(line[len(RESULT_PREFIX):])
