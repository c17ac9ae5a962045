"""Load one model version in Triton beside the serving ones, then probe it with a real inference.

Trigger with a config, e.g. {"model": "reference_lm", "version": 2}. Safe to re-run: loading a
version that is loaded changes nothing. Cheap to parse: operators import their clients lazily.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from llm_release_airflow.operators.triton_load import TritonLoadOperator, TritonProbeOperator

with DAG(
    dag_id="triton_load_probe",
    description="Load a model version in Triton without touching the serving ones, then probe it",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # only runs when triggered: usable the moment it is deployed
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["llm-release", "triton"],
    doc_md=__doc__,
    params={
        "model": Param("reference_lm", type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                       title="Model", description="Triton model name"),
        "version": Param(1, type="integer", minimum=1, title="Version", description="Version to load (positive integer)"),
        "keep_serving": Param(True, type="boolean", title="Keep serving versions",
                              description="Keep the versions that are READY now (turn off only to replace them)"),
    },
) as dag:
    load = TritonLoadOperator(
        task_id="load_version",
        model="{{ params.model }}",
        version="{{ params.version }}",
        keep_serving="{{ params.keep_serving }}",
        probe=False,
    )
    probe = TritonProbeOperator(
        task_id="probe_version",
        model="{{ params.model }}",
        version="{{ params.version }}",
    )
    load >> probe
