"""The gateway's control plane on the local stack: `python -m xds_server` from its own venv.

The control plane needs the generated Envoy API (`xds-protos`), whose top-level packages would
shadow the Envoy wheel and OpenTelemetry's protos in the project's venv, so scripts/bootstrap.sh
builds it a venv of its own (`.venv-xds`, from requirements/xds-server.txt). Its resources live
under the stack's state dir (`xds-store/`), which a fresh `stack up` empties and a component
restart keeps.
"""

from __future__ import annotations

import os
from pathlib import Path

from llm_release.errors import StackError

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_VAR = "LLM_RELEASE_XDS_PYTHON"


def find_xds_python() -> Path:
    """The interpreter of the control plane's venv ($LLM_RELEASE_XDS_PYTHON, else .venv-xds)."""
    venv = Path(os.environ.get("LLM_RELEASE_XDS_VENV") or REPO_ROOT / ".venv-xds")
    python = Path(os.environ.get(PYTHON_VAR) or venv / "bin" / "python")
    if not python.exists():
        raise StackError(f"the gateway's control plane environment is missing ({python}); run the README set-up "
                         f"(scripts/bootstrap.sh builds it), or point {PYTHON_VAR} at its python")
    return python


def xds_argv(python: Path, store: Path, *, grpc_port: int, http_port: int) -> list[str]:
    return [str(python), "-m", "xds_server", "--state-dir", str(store),
            "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
