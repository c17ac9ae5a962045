"""Release a model version: canary steps (or blue-green, shadow, A/B) judged under live traffic,
a person's approval in production, promotion; any FAIL, rejection or timeout rolls back.

Trigger with a config, e.g. {"model": "reference_lm", "version": 2, "environment": "staging"}.
Every task is one transition of the release state machine (llm_release.release.machine); the
release's state lives in the release records, so a retried task resumes where the release
stands. Where releases run comes from the `llm_release_environments` Variable. The trigger
form is generated from the release spec's own definition. See docs/releases.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from llm_release.release.spec import params_schema
from llm_release_airflow.operators.release import (
    ReleaseApprovalOperator,
    ReleaseBeginOperator,
    ReleaseRollbackOperator,
    ReleaseStepsOperator,
    ReleaseTransitionOperator,
)

with DAG(
    dag_id="release",
    description="Release a model version through judged traffic steps, approval and promotion; roll back on failure",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # only runs when triggered: usable the moment it is deployed
    render_template_as_native_obj=True,
    tags=["llm-release", "release"],
    doc_md=__doc__,
    params={name: Param(**kwargs) for name, kwargs in params_schema().items()},
) as dag:
    begin = ReleaseBeginOperator(task_id="begin", release="{{ params }}")
    load = ReleaseTransitionOperator(task_id="load", transition="load")
    probe = ReleaseTransitionOperator(task_id="probe", transition="probe")
    steps = ReleaseStepsOperator(task_id="steps")
    approve = ReleaseApprovalOperator(task_id="approve")
    promote = ReleaseTransitionOperator(task_id="promote", transition="promote",
                                        trigger_rule="none_failed")  # runs after an approval, or after none was needed (skipped)
    rollback = ReleaseRollbackOperator(task_id="rollback")

    begin >> load >> probe >> steps >> approve >> promote
    [begin, load, probe, steps, approve, promote] >> rollback
