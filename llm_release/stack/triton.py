"""Run the real `tritonserver` shipped inside the nvidia-pytriton wheel, on the CPU.

The wheel carries the server binary, the Python backend and one backend stub per Python
version. Triton expects a backend directory that holds both the backend library and the stub
for the interpreter that runs the models, so we assemble one in the state directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from llm_release.errors import StackError


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_triton() -> TritonInstall:
    """Locate the server files inside the installed nvidia-pytriton wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("nvidia-pytriton is not installed; run the README set-up (scripts/bootstrap.sh)")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
        libs=root.parent.parent / "nvidia_pytriton.libs",
    )
    for path in (install.binary, install.python_backend, install.stub, install.libs):
        if not path.exists():
            raise StackError(f"Triton file missing from the nvidia-pytriton wheel: {path}")
    return install


def prepare_backend_dir(install: TritonInstall, target: Path) -> Path:
    """backends/python/ = the wheel's Python backend + the stub for this interpreter."""
    python_dir = target / "python"
    if python_dir.exists():
        shutil.rmtree(python_dir)
    shutil.copytree(install.python_backend, python_dir, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(install.stub, python_dir / "triton_python_backend_stub")
    return target


def _libpython_dir() -> str:
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    ldlib = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    if libdir and ldlib and not (Path(libdir) / ldlib).exists():
        # Debian's python3 is linked statically; its libpython lives in the multiarch dir.
        multiarch = sysconfig.get_config_var("MULTIARCH") or ""
        candidate = Path("/usr/lib") / multiarch
        if (candidate / ldlib).exists():
            return str(candidate)
    return libdir


def triton_env(install: TritonInstall, base_env: dict[str, str]) -> dict[str, str]:
    """Environment for tritonserver: its bundled libraries, libpython, and this interpreter's
    directory first on PATH.

    The backend stub embeds CPython in isolated mode: it ignores PYTHONPATH and PYTHONHOME and
    finds its prefix by looking up `python3` on PATH. With our virtualenv's bin first, it reads
    that venv's pyvenv.cfg and imports our pinned numpy; otherwise it picks up whatever numpy the
    base interpreter has (or none), and a numpy 2 there corrupts every BYTES input tensor.
    """
    env = dict(base_env)
    ld_parts = [str(install.libs), _libpython_dir()]
    if env.get("LD_LIBRARY_PATH"):
        ld_parts.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in ld_parts if p)
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])
    env.pop("PYTHONHOME", None)
    return env


def triton_argv(
    install: TritonInstall,
    *,
    model_repository: Path,
    backend_dir: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    shm_prefix: str,
) -> list[str]:
    return [
        str(install.binary),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend_dir}",
        "--model-control-mode=explicit",
        f"--http-port={http_port}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false",
        "--metrics-interval-ms=1000",
        "--metrics-config=summary_latencies=true",
        # A no-op on the wheel's Triton 2.51 (r24.10): its core knows only counter_latencies,
        # summary_latencies and summary_quantiles and ignores other keys. The TTFT histogram
        # nv_inference_first_response_histogram_ms (decoupled models only) and the config's
        # model_metrics bucket override arrive in 2.52 (r24.11); 2.51 rejects model_metrics.
        "--metrics-config=histogram_latencies=true",
        "--exit-timeout-secs=3",
        # Several Python-backend Tritons on one host need distinct shared-memory names.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        "--log-verbose=0",
    ]
