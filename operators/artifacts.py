"""Publish engines and sync model repositories (thin wrappers around llm_release.artifacts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from airflow.sdk import BaseOperator


class PublishOperator(BaseOperator):
    """Publish a built engine directory once, immutably, to an artifact store.

    A retry with identical bytes is a no-op; other bytes under a published version fail the task.

    :param engine_dir: the engine directory (with metadata.json) to publish.
    :param destination: source spec: {"kind": "s3"|"artifactory"|"oci", "conn_id": ..., "bucket": ..., "prefix": ...}.
    """

    template_fields: Sequence[str] = ("engine_dir", "destination")
    ui_color = "#f0c36d"

    def __init__(self, *, engine_dir: str, destination: dict, **kwargs):
        super().__init__(**kwargs)
        self.engine_dir = engine_dir
        self.destination = destination

    def execute(self, context) -> dict:
        from llm_release.artifacts.publish import publish_engine
        from llm_release_airflow.hooks.artifact_store import store_for_source

        store = store_for_source(self.destination)
        result = publish_engine(Path(self.engine_dir), store, log=self.log)
        return result.to_dict()


class ArtifactSyncOperator(BaseOperator):
    """Bring one region's model repository up to date from its source, then load what is new.

    :param target: {"region", "model_repository", "triton_conn_id", "source": {...}} (see
        llm_release.artifacts.targets).
    :param model: only this model (None: every published model).
    :param version: only this version.
    :param dry_run: report what would change, change nothing.
    :param keep_latest: retention: the newest N published versions per model.
    :param report_dir: where to write the sync report as JSON (a file a person can open).
    """

    template_fields: Sequence[str] = ("target", "model", "version", "dry_run", "keep_latest")
    ui_color = "#f0c36d"

    def __init__(self, *, target, model=None, version=None, dry_run=False, keep_latest=3,
                 report_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.target = target
        self.model = model
        self.version = version
        self.dry_run = dry_run
        self.keep_latest = keep_latest
        self.report_dir = report_dir

    def execute(self, context) -> dict:
        from llm_release.artifacts.sync import SyncOptions, raise_for_report, run_sync
        from llm_release.artifacts.targets import parse_targets
        from llm_release.versions import parse_version
        from llm_release_airflow.hooks.artifact_store import store_for_source
        from llm_release_airflow.hooks.triton import TritonHook

        (target,) = parse_targets([self.target])
        options = SyncOptions(
            models=(self.model,) if self.model else None,
            version=parse_version(self.version) if self.version not in (None, "", "None") else None,
            dry_run=str(self.dry_run).lower() in ("true", "1", "yes"),
            keep_latest=int(self.keep_latest),
        )
        store = store_for_source(target.source)
        triton = TritonHook(triton_conn_id=target.triton_conn_id).get_conn() if target.triton_conn_id else None
        self.log.info("Region %s: syncing %s into %s (%s)", target.region, store.describe(), target.model_repository,
                      "dry run" if options.dry_run else "for real")
        report = run_sync(store, target.model_repository, options, triton=triton, log=self.log)
        doc = report.to_dict() | {"region": target.region}
        if self.report_dir:
            out = Path(self.report_dir) / f"sync-{target.region}-{context['run_id']}.json".replace(":", "_")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2))
            self.log.info("Sync report written to %s", out)
        raise_for_report(report)
        return doc
