"""The Airflow plugin of llm_release: registered through the `airflow.plugins` entry point.

It carries the macros DAG authors use in templates today; the release views and listeners
join it as those features land.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


def triton_version_path(model: str, version) -> str:
    """`{{ macros.llm_release.triton_version_path(params.model, params.version) }}`"""
    return f"/v2/models/{model}/versions/{int(version)}"


class LLMReleasePlugin(AirflowPlugin):
    name = "llm_release"
    macros = [triton_version_path]
