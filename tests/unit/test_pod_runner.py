"""The in-pod build runner, on CPU: real subprocesses, with stand-ins for the GPU tools.

`nvidia-smi`, `trtllm-build` and the `python3` that runs the TensorRT-LLM example scripts need
a GPU and the TensorRT-LLM image, so small shell scripts on PATH stand in for them: they log
their argv, write what the real tools write (a checkpoint config, config.json with `version`,
one rankN.engine per rank) and fail on request. Everything else (the plan, streaming, the
scratch directory and rename, metadata.json) is the code that runs in the pod.
"""

import json
import os
import re
import stat
from pathlib import Path

import pytest

from llm_release.build.pod_runner import (BuildError, BuildStepFailed, RESULT_PREFIX,
                                          directory_digest, parse_result_line, run_build)
from llm_release.build.trtllm import TrtllmBuildRequest, plan_commands
from llm_release.cli import main
from llm_release.errors import SpecError
from llm_release.metadata import read_metadata, verify_engine

FAKE_NVIDIA_SMI = """#!/bin/sh
echo "nvidia-smi $*" >> "$FAKE_LOG"
[ -z "$FAKE_GPUS" ] && { echo "No devices were found"; exit 6; }
for cap in $FAKE_GPUS; do echo "$cap"; done
"""

FAKE_PYTHON = """#!/bin/sh
echo "python3 $*" >> "$FAKE_LOG"
script="$1"; shift
out=""
while [ $# -gt 0 ]; do
  case "$1" in --output_dir) out="$2"; shift;; esac
  shift
done
name=$(basename "$script" .py)
echo "[TRT-LLM] $name starting"
if [ "$FAKE_FAIL" = "$name" ]; then echo "CUDA out of memory in $name"; exit 3; fi
mkdir -p "$out"
echo '{"architecture": "LlamaForCausalLM"}' > "$out/config.json"
echo "weights" > "$out/rank0.safetensors"
echo "[TRT-LLM] $name done"
"""

FAKE_TRTLLM_BUILD = """#!/bin/sh
echo "trtllm-build $*" >> "$FAKE_LOG"
if [ "$1" = "--help" ]; then
  echo "usage: trtllm-build [-h] [--checkpoint_dir CHECKPOINT_DIR] [--max_seq_len MAX_SEQ_LEN]"
  exit 0
fi
ckpt=""; out=""; workers=1
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint_dir) ckpt="$2"; shift;;
    --output_dir) out="$2"; shift;;
    --workers) workers="$2"; shift;;
  esac
  shift
done
[ -f "$ckpt/config.json" ] || { echo "no checkpoint at $ckpt"; exit 4; }
if [ "$FAKE_FAIL" = "trtllm-build" ]; then
  i=0; while [ $i -lt 60 ]; do echo "building layer $i"; i=$((i+1)); done
  echo "[TRT-LLM] [E] Engine build failed"; exit 5
fi
mkdir -p "$out"
echo "{\\"version\\": \\"${FAKE_TRTLLM_VERSION-1.0.0}\\", \\"build_config\\": {}}" > "$out/config.json"
r=0; while [ $r -lt "$workers" ]; do echo "engine $r" > "$out/rank$r.engine"; r=$((r+1)); done
echo "[TRT-LLM] Total time of building all engines: 00:00:01"
"""

PARAMS = {"precision": "fp16", "max_batch_size": 4, "max_input_len": 128, "max_seq_len": 256}
IMAGE = "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"


@pytest.fixture
def pod(tmp_path):
    """A fake pod filesystem: tools on PATH, examples, a checkpoint, an engines volume."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("nvidia-smi", FAKE_NVIDIA_SMI), ("python3", FAKE_PYTHON),
                       ("trtllm-build", FAKE_TRTLLM_BUILD)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    examples = tmp_path / "examples"
    for rel in ("models/core/llama/convert_checkpoint.py", "quantization/quantize.py"):
        (examples / rel).parent.mkdir(parents=True, exist_ok=True)
        (examples / rel).write_text("# stand-in\n")
    ckpt = tmp_path / "checkpoints" / "llama"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (ckpt / "model.safetensors").write_bytes(b"\0" * 1024)
    calib = tmp_path / "checkpoints" / "calib"
    calib.mkdir()
    (calib / "train.jsonl").write_text('{"text": "hello"}\n')
    engines = tmp_path / "engines"
    log_file = tmp_path / "tools.log"
    log_file.touch()
    environ = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log_file),
               "FAKE_GPUS": "9.0", "LLM_RELEASE_TRITON_IMAGE": IMAGE}

    class Pod:
        pass

    p = Pod()
    p.environ, p.log_file, p.engines, p.ckpt, p.calib, p.examples = \
        environ, log_file, engines, ckpt, calib, examples
    p.tools = lambda: [line for line in log_file.read_text().splitlines()
                       if not line.startswith("nvidia-smi")]
    return p


def make_request(pod, **changes):
    params = {**PARAMS, **changes.pop("params", {})}
    data = {"model": "llama3_8b", "version": 1, "model_family": "llama",
            "checkpoint_dir": str(pod.ckpt), "engine_dir": str(pod.engines / "llama3_8b" / "1"),
            "params": params, "examples_dir": str(pod.examples), **changes}
    return TrtllmBuildRequest.from_dict(data)


def build(pod, request, **env):
    lines = []
    result = run_build(request, log=lines.append, environ={**pod.environ, **env})
    return result, lines


def leftovers(pod):
    parent = pod.engines / "llama3_8b"
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".")) if parent.exists() else []


def test_steps_run_in_order_with_the_planned_argv(pod):
    request = make_request(pod, params={"tp_size": 2}, image=IMAGE)
    result, lines = build(pod, request, FAKE_GPUS="9.0 9.0")
    planned = plan_commands(request, work_dir="/W")
    ran = [re.sub(r"\S*/\.1\.tmp-[0-9a-f]{12}", "/W", line) for line in pod.tools()]
    assert ran == [" ".join(planned[0].argv), " ".join(planned[1].argv), "trtllm-build --help"]
    assert ran[1].endswith("--workers 2 --log_level info")
    assert result["gpu_arch"] == "sm90" and result["reused"] is False
    assert any("convert | [TRT-LLM] convert_checkpoint done" in line for line in lines)
    assert re.match(r"^\[\s*\d+\.\d+s\] step trtllm-build: trtllm-build --checkpoint_dir",
                    next(l for l in lines if "step trtllm-build:" in l))


def test_metadata_is_written_and_verifies(pod):
    request = make_request(pod, image=IMAGE)
    result, lines = build(pod, request)
    engine = Path(request.engine_dir)
    meta = verify_engine(engine)
    assert meta.builder == "tensorrt-llm"
    assert (meta.model, meta.version, meta.precision, meta.gpu_arch) == ("llama3_8b", 1, "fp16", "sm90")
    assert meta.trtllm_version == "1.0.0"
    assert meta.triton_image == IMAGE
    assert meta.source_checkpoint_digest == directory_digest(pod.ckpt)
    assert sorted(meta.files) == ["config.json", "rank0.engine", "trtllm-build-help.txt"]
    assert "--checkpoint_dir" in (engine / "trtllm-build-help.txt").read_text()
    assert meta.build_params["model_family"] == "llama"
    assert meta.build_params["commands"][1][:3] == ["trtllm-build", "--checkpoint_dir",
                                                    "$WORK/tllm_checkpoint"]
    assert leftovers(pod) == []
    record = parse_result_line(lines[-1])
    assert record == result
    assert record["files"] == 3 and record["bytes"] > 0 and record["engine_dir"] == str(engine)


def test_image_comes_from_the_pod_environment(pod):
    request = make_request(pod)
    build(pod, request)
    assert read_metadata(request.engine_dir).triton_image == IMAGE


def test_calibrated_build_runs_quantize(pod):
    request = make_request(pod, params={"precision": "fp8", "kv_cache_dtype": "fp8"},
                           calib_dataset=str(pod.calib))
    build(pod, request)
    first = pod.tools()[0]
    assert "/quantization/quantize.py" in first
    assert f"--calib_dataset {pod.calib}" in first and "--kv_cache_dtype fp8" in first


@pytest.mark.parametrize("failing, code, text", [
    ("convert_checkpoint", 3, "CUDA out of memory in convert_checkpoint"),
    ("trtllm-build", 5, "[TRT-LLM] [E] Engine build failed"),
])
def test_failed_step_is_named_and_leaves_no_engine(pod, failing, code, text):
    request = make_request(pod)
    with pytest.raises(BuildStepFailed) as err:
        build(pod, request, FAKE_FAIL=failing)
    step = "convert" if failing == "convert_checkpoint" else "trtllm-build"
    assert (err.value.step, err.value.code) == (step, code)
    assert err.value.tail[-1] == text
    assert len(err.value.tail) <= 40
    assert f"step '{step}' failed with exit code {code}" in str(err.value)
    assert not Path(request.engine_dir).exists()
    assert leftovers(pod) == []


def test_no_gpu_refuses_before_any_step(pod):
    with pytest.raises(BuildError, match="no GPU"):
        build(pod, make_request(pod), FAKE_GPUS="")
    assert pod.tools() == []


def test_too_few_gpus_for_the_ranks(pod):
    with pytest.raises(SpecError) as err:
        build(pod, make_request(pod, params={"tp_size": 2, "pp_size": 2}), FAKE_GPUS="9.0 9.0")
    assert err.value.field == "tp_size"
    assert pod.tools() == []


def test_precision_the_gpu_cannot_run_is_refused(pod):
    request = make_request(pod, params={"precision": "fp8"}, calib_dataset=str(pod.calib))
    with pytest.raises(SpecError) as err:
        build(pod, request, FAKE_GPUS="8.0")
    assert err.value.field == "precision"
    assert pod.tools() == []


def test_missing_examples_refused_naming_examples_dir(pod, tmp_path):
    request = make_request(pod, examples_dir=str(tmp_path / "nowhere"))
    with pytest.raises(SpecError) as err:
        build(pod, request)
    assert err.value.field == "examples_dir"
    assert not Path(request.engine_dir).exists()


def test_retry_of_a_finished_build_is_a_no_op(pod):
    request = make_request(pod)
    first, _ = build(pod, request)
    before = read_metadata(request.engine_dir)
    runs = len(pod.tools())
    second, lines = build(pod, request)
    assert second["reused"] is True and len(pod.tools()) == runs
    assert read_metadata(request.engine_dir) == before
    assert parse_result_line(lines[-1])["files"] == first["files"]


@pytest.mark.parametrize("change", [
    {"params": {"max_batch_size": 8}},
    {"model": "other_model"},
])
def test_a_different_build_at_engine_dir_is_refused(pod, change):
    build(pod, make_request(pod))
    with pytest.raises(SpecError) as err:
        build(pod, make_request(pod, **change))
    assert err.value.field == "engine_dir"
    assert "different build" in str(err.value)


def test_changed_checkpoint_is_a_different_build(pod):
    build(pod, make_request(pod))
    (pod.ckpt / "model.safetensors").write_bytes(b"\1" * 1024)
    with pytest.raises(SpecError, match="source_checkpoint_digest"):
        build(pod, make_request(pod))


def test_damaged_engine_at_engine_dir_is_refused(pod):
    request = make_request(pod)
    build(pod, request)
    (Path(request.engine_dir) / "rank0.engine").write_text("tampered")
    with pytest.raises(SpecError, match="not an intact engine"):
        build(pod, request)


def test_engine_without_version_is_an_error(pod):
    request = make_request(pod)
    with pytest.raises(BuildError, match="version"):
        build(pod, request, FAKE_TRTLLM_VERSION="")
    assert not Path(request.engine_dir).exists() and leftovers(pod) == []


def test_directory_digest_covers_names_and_contents(tmp_path):
    root = tmp_path / "c"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"a")
    (root / "sub" / "b.bin").write_bytes(b"b")
    digest = directory_digest(root)
    assert digest.startswith("sha256:") and digest == directory_digest(root)
    (root / "sub" / "b.bin").rename(root / "sub" / "c.bin")
    assert directory_digest(root) != digest
    with pytest.raises(SpecError):
        directory_digest(tmp_path / "missing")


def test_cli_runs_the_build_and_prints_the_result_last(pod, monkeypatch, capsys):
    for key, value in pod.environ.items():
        monkeypatch.setenv(key, value)
    request = make_request(pod)
    assert main(["engine", "build-trtllm", "--request", json.dumps(request.to_dict())]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(RESULT_PREFIX)
    assert parse_result_line(last)["engine_dir"] == request.engine_dir
    verify_engine(request.engine_dir)


def test_cli_refuses_bad_json(capsys):
    assert main(["engine", "build-trtllm", "--request", "{not json"]) == 2
    assert "request: is not valid JSON" in capsys.readouterr().err
