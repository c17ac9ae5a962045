"""Publish engines and sync model repositories (thin wrappers around llm_release.artifacts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from llm_release_airflow.retry_policy import ReleaseOperator


class PublishOperator(ReleaseOperator):
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
        if result.uploaded:
            self.log.info("Published %s v%s to %s as %s (%.1f MiB) in %.1f s", result.model, result.version,
                          result.store, result.manifest_digest, result.archive_bytes / 2**20, result.seconds)
        else:
            self.log.info("%s v%s was already published to %s with these bytes (%s): nothing uploaded",
                          result.model, result.version, result.store, result.manifest_digest)
        self._announce(context, result)
        return result.to_dict()

    def _announce(self, context, result) -> None:
        """Put what was published in the event of every asset this task updates (`outlets`), so
        a DAG scheduled on the asset (release_published) knows which version to release."""
        events = context.get("outlet_events")
        for outlet in self.outlets or ():
            if events is not None and type(outlet).__name__ == "Asset":
                events[outlet].extra = {"model": result.model, "version": result.version,
                                        "manifest_digest": result.manifest_digest, "store": result.store}


def _sync_options(model, version, dry_run, keep_latest):
    from llm_release.artifacts.sync import SyncOptions
    from llm_release.versions import parse_version

    return SyncOptions(
        models=(model,) if model not in (None, "", "None") else None,
        version=parse_version(version) if version not in (None, "", "None") else None,
        dry_run=str(dry_run).lower() in ("true", "1", "yes"),
        keep_latest=int(keep_latest),
    )


class _RegionOperator(ReleaseOperator):
    """Shared by the plan and sync operators: one region's target, store and Triton."""

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

    def _region(self):
        from llm_release.artifacts.targets import parse_targets
        from llm_release_airflow.hooks.artifact_store import store_for_source
        from llm_release_airflow.hooks.triton import TritonHook

        (target,) = parse_targets([self.target])
        store = store_for_source(target.source)
        hook = TritonHook(triton_conn_id=target.triton_conn_id) if target.triton_conn_id else None
        self._runtime = hook.runtime() if hook else None  # the provenance gate, where the connection says
        return target, store, hook.get_conn() if hook else None

    def _write_report(self, doc: dict, name: str) -> None:
        if not self.report_dir:
            return
        out = Path(self.report_dir) / name.replace(":", "_")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))
        self.log.info("Sync report written to %s", out)


class ArtifactSyncPlanOperator(_RegionOperator):
    """List one region's source once and say which models need a sync task.

    Returns {"region", "report" (the plan, as a dry run), "work": [{"target", "model",
    "listing"}]}: the listing travels with the work, so per-model tasks do not list again. In a
    dry run the work list is empty: the plan is the result.
    """

    def execute(self, context) -> dict:
        from dataclasses import replace

        from llm_release.artifacts.sync import models_with_work, run_sync

        options = _sync_options(self.model, self.version, self.dry_run, self.keep_latest)
        target, store, triton = self._region()
        listing = store.list_published()
        plan = run_sync(store, target.model_repository, replace(options, dry_run=True), triton=triton,
                        listing=listing, log=self.log)
        with_work = models_with_work(plan)
        models = [] if options.dry_run else with_work
        if options.dry_run:
            self.log.info("Region %s: dry run, nothing changed; %d model(s) would sync%s", target.region,
                          len(with_work), f": {', '.join(with_work)}" if with_work else "")
        else:
            self.log.info("Region %s: %d model(s) to sync%s", target.region, len(models),
                          f": {', '.join(models)}" if models else "")
        doc = plan.to_dict() | {"region": target.region}
        self._write_report(doc, f"plan-{target.region}-{context['run_id']}.json")
        return {"region": target.region, "report": doc,
                "work": [{"target": target.to_dict(), "model": m, "listing": listing.only([m]).to_dict()}
                         for m in models]}


class ArtifactSyncOperator(_RegionOperator):
    """Bring one region's model repository up to date from its source, then load what is new.

    :param target: {"region", "model_repository", "triton_conn_id", "source": {...}} (see
        llm_release.artifacts.targets).
    :param model: only this model (None: every published model).
    :param listing: the source's listing from a planning task (None: list the source here).
    :param version: only this version.
    :param dry_run: report what would change, change nothing.
    :param keep_latest: retention: the newest N published versions per model.
    :param report_dir: where to write the sync report as JSON (a file a person can open).
    """

    def __init__(self, *, listing: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.listing = listing

    def execute(self, context) -> dict:
        from llm_release.artifacts.stores.base import Listing
        from llm_release.artifacts.sync import raise_for_report, run_sync

        options = _sync_options(self.model, self.version, self.dry_run, self.keep_latest)
        target, store, triton = self._region()
        self.log.info("Region %s: syncing %s%s into %s (%s)", target.region, store.describe(),
                      f" model {self.model}" if self.model else "", target.model_repository,
                      "dry run" if options.dry_run else "for real")
        listing = Listing.from_dict(self.listing) if self.listing else None
        report = run_sync(store, target.model_repository, options, triton=triton, listing=listing, log=self.log,
                          runtime=self._runtime)
        doc = report.to_dict() | {"region": target.region}
        self._write_report(doc, f"sync-{target.region}-{self.model or 'all'}-{context['run_id']}.json")
        for model, versions in sorted(report.loaded.items()):
            self.log.info("Region %s: %s versions %s are READY in Triton", target.region, model,
                          ", ".join(f"v{v}" for v in versions))
        raise_for_report(report)
        return doc
