#!/usr/bin/env bash
# record-build-env DIR: write what an engine build depends on into DIR
#   DIR/trtllm-build-help.txt  the output of `trtllm-build --help` (flags change between
#                              TensorRT-LLM releases: --max_seq_len, --kv_cache_type, ...)
#   DIR/build-env.json         serving image, TensorRT-LLM / TensorRT / Python versions, and
#                              the GPU when one is visible
#
# Run at image build time (docker/build/Dockerfile) and again by the build pod, next to the
# engine it builds. Exit 1 when `trtllm-build --help` cannot be recorded.
#
# `import tensorrt_llm` needs libcuda.so.1 to resolve (not a GPU). A GPU pod gets it from the
# NVIDIA container runtime; `docker build` does not, so the help is tried as is, then with the
# image's CUDA forward-compatibility driver library, then with the CUDA toolkit's stub.
set -uo pipefail

out="${1:-${LLM_RELEASE_BUILD_ENV_DIR:-/opt/llm-release}}"
mkdir -p "$out"
help_file="$out/trtllm-build-help.txt"
err_file="$(mktemp)"
stub_dir=""
trap 'rm -f "$err_file"; [ -n "$stub_dir" ] && rm -rf "$stub_dir"' EXIT

try_help() {  # $1: label, $2: extra LD_LIBRARY_PATH entry ("" for none)
  local ld="${LD_LIBRARY_PATH:-}"
  [ -n "$2" ] && ld="$2${ld:+:$ld}"
  echo "== attempt: $1" >> "$err_file"
  if LD_LIBRARY_PATH="$ld" trtllm-build --help > "$help_file.tmp" 2>> "$err_file" \
     && grep -q -- "--checkpoint_dir" "$help_file.tmp"; then
    mv "$help_file.tmp" "$help_file"
    libcuda_source="$1"
    return 0
  fi
  rm -f "$help_file.tmp"
  return 1
}

command -v trtllm-build > /dev/null || { echo "record-build-env: trtllm-build is not on PATH" >&2; exit 1; }

libcuda_source=""
recorded=0
cuda="${CUDA_HOME:-/usr/local/cuda}"
try_help "as is" "" && recorded=1
if [ "$recorded" = 0 ]; then
  for dir in "$cuda/compat/lib.real" "$cuda/compat/lib" "$cuda/compat"; do
    if [ -e "$dir/libcuda.so.1" ] && try_help "cuda compat ($dir)" "$dir"; then recorded=1; break; fi
  done
fi
if [ "$recorded" = 0 ]; then
  for stub in "$cuda"/lib64/stubs/libcuda.so "$cuda"/targets/*/lib/stubs/libcuda.so; do
    [ -e "$stub" ] || continue
    stub_dir="$(mktemp -d)"
    ln -s "$stub" "$stub_dir/libcuda.so.1"
    if try_help "cuda stub ($stub)" "$stub_dir"; then recorded=1; break; fi
    rm -rf "$stub_dir"; stub_dir=""
  done
fi

if [ "$recorded" = 0 ]; then
  echo "record-build-env: trtllm-build --help failed in every attempt:" >&2
  tail -n 60 "$err_file" >&2
  exit 1
fi

# Versions from package metadata: no import of tensorrt_llm, so no CUDA needed here.
LIBCUDA_SOURCE="$libcuda_source" HELP_FILE="$help_file" python3 - "$out/build-env.json" <<'PY'
import hashlib, json, os, platform, subprocess, sys, datetime
from importlib import metadata

def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None

def gpus():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
    return [{"name": r[0], "compute_cap": r[1], "driver": r[2]} for r in rows if len(r) == 3]

help_bytes = open(os.environ["HELP_FILE"], "rb").read()
record = {
    "triton_image": os.environ.get("LLM_RELEASE_TRITON_IMAGE"),
    "triton_server_version": os.environ.get("TRITON_SERVER_VERSION"),
    "tensorrt_llm_version": version("tensorrt_llm") or version("tensorrt-llm"),
    "tensorrt_version": version("tensorrt") or version("tensorrt_cu13") or version("tensorrt_cu12"),
    "llm_release_version": version("llm-release"),
    "python": platform.python_version(),
    "trtllm_build_help_sha256": hashlib.sha256(help_bytes).hexdigest(),
    "trtllm_build_help_libcuda": os.environ.get("LIBCUDA_SOURCE"),
    "gpus": gpus(),
    "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}
with open(sys.argv[1], "w") as fh:
    json.dump(record, fh, indent=2)
    fh.write("\n")
PY
echo "record-build-env: wrote $help_file ($libcuda_source) and $out/build-env.json"
