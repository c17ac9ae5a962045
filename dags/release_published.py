"""Release what the nightly build published: one `release` run per published engine.

Scheduled on the `llm-release://engines/published` asset, which the nightly build's publish
task updates with the model, version and manifest digest of each engine that passed its
checks. Each event becomes a run of the `release` DAG into the first environment of the
progression (the Variable `llm_release_nightly`'s `release_environment`, staging by default);
production always comes after, by hand, with its approval. Paused when first deployed: turning
it on is the decision to let passed engines start canaries without a person triggering them.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, task

from llm_release_airflow.operators.nightly import StartReleaseOperator
from llm_release_airflow.retry_policy import fail_now_if_permanent

PUBLISHED = Asset(uri="llm-release://engines/published", name="llm_release_published_engines")

with DAG(
    dag_id="release_published",
    description="Start a staging release of every engine the nightly build published",
    schedule=[PUBLISHED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,
    render_template_as_native_obj=True,
    tags=["llm-release", "release"],
    doc_md=__doc__,
) as dag:

    @task
    @fail_now_if_permanent
    def releases(triggering_asset_events=None) -> list[dict]:
        """One release config per published engine in the events that triggered this run."""
        import json
        import logging

        from airflow.sdk import Variable

        from llm_release.build.nightly import releases_from_events

        raw = Variable.get("llm_release_nightly", default=None)
        settings = (json.loads(raw) if isinstance(raw, str) else raw) or {}
        environment = settings.get("release_environment") or "staging"
        extras = [event.extra for events in (triggering_asset_events or {}).values() for event in events]
        out = releases_from_events(extras, environment)
        logging.getLogger("airflow.task").info("Releasing to %s: %s", environment,
                                               ", ".join(f"{c['model']} v{c['version']}" for c in out) or "nothing")
        return out

    StartReleaseOperator.partial(task_id="start_release", trigger_dag_id="release").expand(conf=releases())
