"""Hourly: bring every region's model repository up to date from its artifact source.

Mapped over regions and models: one planning task per region (each its own model repository,
Triton and source connection, as in "build once, upload once, every region syncs from it")
lists its source once and names the models with something to do; one sync task per (region,
model) then installs, prunes and loads, so a failing model retries alone. Regions come from the Airflow
Variable `llm_release_sync_targets` (JSON list; see llm_release.artifacts.targets). Trigger
with a config to sync one model, one version, or to dry-run: {"model": "llama", "version": 42,
"dry_run": true}. A no-op sync downloads nothing.

Paused when first deployed. Unpausing starts one run at once for the latest hour (catchup is
off), then one every hour. A region whose `scheduled` setting is `dry_run` (the local stack's)
only reports on scheduled runs; runs triggered by hand sync for real unless `dry_run` is set.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from llm_release_airflow.operators.artifacts import ArtifactSyncOperator, ArtifactSyncPlanOperator
from llm_release_airflow.retry_policy import fail_now_if_permanent

TARGETS_VARIABLE = "llm_release_sync_targets"

with DAG(
    dag_id="artifact_sync",
    description="Sync published engines into each region's model repository and load what is new",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,  # a scheduled sync changes model repositories: a person turns it on
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["llm-release", "artifacts"],
    doc_md=__doc__,
    params={
        "model": Param(None, type=["null", "string"], pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                       title="Model", description="Only this model (empty: every published model)"),
        "version": Param(None, type=["null", "integer"], minimum=1, title="Version",
                         description="Only this version (empty: the newest published ones, per Keep latest)"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Report what would be installed, removed and loaded; change nothing"),
        "keep_latest": Param(3, type="integer", minimum=1, maximum=100, title="Keep latest",
                             description="Retention: the newest N published versions stay installed per model; "
                                         "older ones are removed unless Triton serves them"),
        "regions": Param(None, type=["null", "array"], items={"type": "string"}, title="Regions",
                         description="Only these regions (empty: every region in the Variable "
                                     "llm_release_sync_targets)"),
    },
) as dag:

    @task
    @fail_now_if_permanent
    def sync_targets(params=None, dag_run=None) -> list[dict]:
        """The configured regions (validated), narrowed to the ones asked for, each with whether
        this run only reports there (asked for, or a scheduled run in a dry-run region)."""
        import logging

        from airflow.sdk import Variable

        from llm_release.artifacts.targets import parse_targets
        from llm_release.errors import SpecError

        params = params or {}
        targets = parse_targets(Variable.get(TARGETS_VARIABLE, deserialize_json=True))
        wanted = params.get("regions")
        if wanted:
            unknown = sorted(set(wanted) - {t.region for t in targets})
            if unknown:
                raise SpecError("regions", f"unknown regions {unknown}", f"configured: {[t.region for t in targets]}")
            targets = [t for t in targets if t.region in wanted]
        scheduled_run = str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled")
        work = []
        for target in targets:
            dry_run = target.dry_run_for(scheduled_run=scheduled_run, asked=bool(params.get("dry_run")))
            if dry_run and not params.get("dry_run"):
                logging.getLogger("airflow.task").info(
                    "Region %s: scheduled runs are dry runs there (scheduled=%s in %s); this run only reports. "
                    "Trigger the DAG by hand to sync, or set scheduled to sync.", target.region, target.scheduled,
                    TARGETS_VARIABLE)
            work.append({"target": target.to_dict(), "dry_run": dry_run})
        return work

    plans = ArtifactSyncPlanOperator.partial(
        task_id="plan_region",
        model="{{ params.model }}",
        version="{{ params.version }}",
        keep_latest="{{ params.keep_latest }}",
    ).expand_kwargs(sync_targets())

    @task
    @fail_now_if_permanent
    def models_to_sync(plans) -> list[dict]:
        """One entry per (region, model) with work, across all regions."""
        return [item for plan in plans for item in plan["work"]]

    ArtifactSyncOperator.partial(
        task_id="sync_model",
        version="{{ params.version }}",
        keep_latest="{{ params.keep_latest }}",
        max_active_tis_per_dagrun=4,
    ).expand_kwargs(models_to_sync(plans.output))
