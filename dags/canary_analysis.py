"""Judge a canary that already takes traffic: hold while the judge watches, roll back on FAIL.

Trigger with a config, e.g. {"model": "reference_lm", "candidate": 2, "baseline": 1}. The
judge compares the candidate with the baseline on the gateway's per-version counts and a
streaming probe (see docs/analysis.md); the soak runs in the triggerer. With rollback on, a
FAIL puts all traffic on the baseline the moment it is decided. Cheap to parse: the sensor
imports its clients lazily.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from llm_release_airflow.sensors.canary_analysis import CanaryAnalysisSensor

with DAG(
    dag_id="canary_analysis",
    description="Judge a canary version against the stable one from live traffic; roll back on FAIL",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # only runs when triggered: usable the moment it is deployed
    render_template_as_native_obj=True,
    tags=["llm-release", "canary"],
    doc_md=__doc__,
    params={
        "model": Param("reference_lm", type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                       title="Model", description="Model name at the gateway (letters, digits, _ . -), e.g. reference_lm"),
        "candidate": Param(2, type="integer", minimum=1, title="Candidate version",
                           description="The version under analysis; it must already take traffic (weight, mirror or header route)"),
        "baseline": Param(1, type="integer", minimum=1, title="Baseline version",
                          description="The stable version the candidate is held against, on the same traffic"),
        "shadow": Param(False, type="boolean", title="Shadow (mirror)",
                        description="On when the candidate only receives mirrored copies of the traffic"),
        "min_soak_s": Param(60, type="number", minimum=0, title="Minimum soak (s)",
                            description="A PASS ends the analysis only after this many seconds; a FAIL ends it at once"),
        "max_soak_s": Param(1800, type="number", minimum=10, title="Maximum soak (s)",
                            description="Still INCONCLUSIVE after this many seconds, the analysis fails (and rolls back)"),
        "rollback_on_fail": Param(True, type="boolean", title="Roll back on FAIL",
                                  description="On: a FAIL routes all traffic to the baseline at once, from the triggerer"),
        "deferrable": Param(True, type="boolean", title="Wait in the triggerer",
                            description="On: the soak runs in the triggerer and holds no worker slot. Off: the "
                                        "sensor polls in a worker (for deployments without a triggerer)"),
        "analysis": Param({}, type="object", title="Judge settings",
                          description='Overrides of the judge\'s settings, e.g. {"gates": {"error_rate": {"max": 0.02}}, '
                                      '"disabled": {"gpu_headroom": "CPU runtime"}}; see docs/analysis.md'),
    },
) as dag:
    CanaryAnalysisSensor(
        task_id="judge_canary",
        model="{{ params.model }}",
        candidate="{{ params.candidate }}",
        baseline="{{ params.baseline }}",
        shadow="{{ params.shadow }}",
        analysis="{{ params.analysis }}",
        min_soak_s="{{ params.min_soak_s }}",
        max_soak_s="{{ params.max_soak_s }}",
        rollback_on_fail="{{ params.rollback_on_fail }}",
        deferrable="{{ params.deferrable }}",
    )
