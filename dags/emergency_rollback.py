"""Emergency rollback: all of a model's traffic back on a stable version, in one action.

Trigger with e.g. {"model": "reference_lm", "environment": "production", "to_version": 1}, or
without `to_version` to restore the routing from before the release in flight (or the last
promotion), as the release records say. The version must be READY in Triton; there is no probe
(it served before, and every second counts). The release in flight is closed as rolled back.
The same without Airflow: `llm-release rollback`. See docs/releases.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from llm_release_airflow.retry_policy import fail_now_if_permanent

with DAG(
    dag_id="emergency_rollback",
    description="Route all of a model's traffic back to a stable version now",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,  # only runs when triggered: usable the moment it is deployed
    render_template_as_native_obj=True,
    tags=["llm-release", "rollback"],
    doc_md=__doc__,
    params={
        "model": Param(None, type="string", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", title="Model",
                       description="The model clients call at the gateway"),
        "environment": Param("production", type="string", pattern=r"^[a-z][a-z0-9_-]{0,31}$", title="Environment",
                             description="An environment of the llm_release_environments Variable"),
        "region": Param(None, type=["null", "string"], title="Region",
                        description="The environment's region, when it has several"),
        "to_version": Param(None, type=["null", "integer"], minimum=1, title="Roll back to version",
                            description="All traffic to this version; empty: the routing from before the release "
                                        "in flight or the last promotion, from the release records"),
        "reason": Param(None, type=["null", "string"], title="Reason",
                        description="Why, for the release record (e.g. the incident number)"),
    },
) as dag:

    @task(retries=0)
    @fail_now_if_permanent
    def roll_back(params=None, dag_run=None) -> dict:
        """Straight to the router and Triton; the records are written when reachable."""
        import logging

        from llm_release.records import ReleaseRecords
        from llm_release.release.emergency import emergency_rollback
        from llm_release_airflow.hooks.environments import load_environments
        from llm_release_airflow.hooks.records import records_url

        log = logging.getLogger("airflow.task")
        env = load_environments().get(params["environment"], params["region"])
        try:
            records = ReleaseRecords(records_url(log=log))
        except Exception as exc:  # noqa: BLE001 - the rollback never waits for the records
            log.warning("release records unreachable (%s): rolling back without them", exc)
            records = None
        actor = getattr(dag_run, "triggering_user_name", None) or "airflow"
        result = emergency_rollback(env, params["model"], to_version=params["to_version"], records=records,
                                    actor=actor, reason=params["reason"], log=log)
        log.info("%s in %s now routes %s (%.2f s); %s", params["model"], env.key, result.applied.describe(),
                 result.seconds, "recorded" if result.recorded else f"NOT recorded: {result.records_problem}")
        return result.to_dict()

    roll_back()
