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
                       title="Model",
                       description="Triton model name as in the model repository (letters, digits, _ . -), "
                                   "e.g. reference_lm"),
        "version": Param(1, type="integer", minimum=1, title="Version",
                         description="Version to load beside the serving ones: a positive integer whose directory "
                                     "is installed in the model repository"),
        "keep_serving": Param(True, type="boolean", title="Keep serving versions",
                              description="On: every version READY now stays loaded (nothing serving is unloaded). "
                                          "Off: only this version stays loaded; turn off only to replace the others"),
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
