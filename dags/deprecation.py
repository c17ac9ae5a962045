"""Retire old model versions every day: keep the newest N and anything with traffic or READY in
another environment; retire the rest only after a window with zero gateway traffic (read from
Prometheus): forget their routes, unload them from Triton, remove them from the model
repository. Never touches a stable version; refuses, with the numbers, when traffic is not zero.

Environments come from the `llm_release_environments` Variable. A scheduled run only reports
in environments whose `scheduled_retirement` is `dry_run` (the local stack's); a run triggered
by hand retires for real unless `dry_run` is on. See docs/deprecation.md.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from llm_release_airflow.retry_policy import fail_now_if_permanent

with DAG(
    dag_id="deprecation",
    description="Retire old model versions with no traffic: routes, Triton, model repository",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,  # a scheduled deprecation removes versions: a person turns it on
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["llm-release", "deprecation"],
    doc_md=__doc__,
    params={
        "environments": Param([], type="array", items={"type": "string"}, title="Environments",
                              description="Only these environments (names; empty: every environment of the "
                                          "llm_release_environments Variable)"),
        "models": Param([], type="array", items={"type": "string"}, title="Models",
                        description="Only these models (empty: every model installed in each environment's "
                                    "model repository)"),
        "keep_newest": Param(2, type="integer", minimum=1, maximum=100, title="Keep newest",
                             description="The newest N installed versions of each model are always kept"),
        "zero_traffic_window_s": Param(86400, type="number", minimum=1, title="Zero-traffic window (s)",
                                       description="A version is retired only when the gateway sent it no request "
                                                   "for this long (Prometheus)"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Plan and report what would be retired; change nothing"),
    },
) as dag:

    @task
    @fail_now_if_permanent
    def plan(params=None, dag_run=None) -> list[dict]:
        """Per environment and model: kept versions with why, versions to retire."""
        import logging

        from llm_release.release.deprecation import plan_environment
        from llm_release.release.retirement import RetentionPolicy
        from llm_release_airflow.hooks.environments import load_environments

        log = logging.getLogger("airflow.task")
        envs = load_environments()
        policy = RetentionPolicy(keep_newest=int(params["keep_newest"]),
                                 zero_traffic_window_s=float(params["zero_traffic_window_s"]))
        wanted = set(params["environments"] or envs.names)
        unknown = wanted - set(envs.names)
        if unknown:
            from llm_release.errors import SpecError

            raise SpecError("environments", f"{sorted(unknown)} are not defined", f"known: {', '.join(envs.names)}")
        scheduled = dag_run is not None and str(dag_run.run_type).endswith("scheduled")
        work = []
        for env in envs.environments:
            if env.name not in wanted:
                continue
            dry = bool(params["dry_run"]) or (scheduled and env.scheduled_retirement == "dry_run")
            for item in plan_environment(envs, env, models=params["models"] or None, policy=policy):
                log.info("%s %s: keep %s; retire %s%s", env.key, item["model"], item["keep"], item["retire"] or "nothing",
                         " (dry run: nothing changes)" if dry and item["retire"] else "")
                if not dry:
                    work += [{"environment": env.name, "region": env.region, "model": item["model"], "version": v}
                             for v in item["retire"]]
        return work

    @task(max_active_tis_per_dagrun=1)
    @fail_now_if_permanent
    def retire(item: dict, params=None) -> dict:
        """One version out of one environment (refused with the numbers if it still has traffic)."""
        import logging

        from llm_release.release.deprecation import retire_in_environment
        from llm_release.release.retirement import RetentionPolicy
        from llm_release_airflow.hooks.environments import load_environments

        env = load_environments().get(item["environment"], item["region"])
        policy = RetentionPolicy(keep_newest=int(params["keep_newest"]),
                                 zero_traffic_window_s=float(params["zero_traffic_window_s"]))
        result = retire_in_environment(env, item["model"], int(item["version"]), policy=policy,
                                       log=logging.getLogger("airflow.task"))
        return result.to_dict()

    retire.expand(item=plan())
