"""Prometheus (Debian package) scraping Triton's metrics and Envoy's stats every second."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from llm_release.errors import StackError


def find_prometheus() -> Path:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not found:
        raise StackError("prometheus is not installed; run the README set-up (apt-get install prometheus)")
    return Path(found)


def write_config(state_dir: Path, *, triton_metrics: str, envoy_admin: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "triton", "static_configs": [{"targets": [triton_metrics], "labels": {"stack": "local"}}]},
            {"job_name": "envoy", "metrics_path": "/stats/prometheus",
             "static_configs": [{"targets": [envoy_admin], "labels": {"stack": "local"}}]},
        ],
    }
    path = state_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_argv(binary: Path, config: Path, *, data_dir: Path, port: int) -> list[str]:
    return [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1d",
        "--web.enable-lifecycle",
    ]
