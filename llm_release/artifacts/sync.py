"""Bring a model repository up to date from an artifact store, safely and cheaply.

One listing per source says what is published; each installed version's manifest is derived
from its own metadata.json, so comparing costs no download and a no-op sync moves 0 bytes.
Only what changed is downloaded; every file's sha256 is checked while it is extracted into a
temp directory Triton ignores; one rename installs it. Versions already installed are never
overwritten (a different published manifest for an installed version is reported as a
conflict). Retention keeps the newest N published versions and anything Triton serves; Triton
is then asked to load the new versions beside the ones it serves, never unloading one.

Given the runtime the repository serves (`runtime=`, llm_release.provenance), a version whose
engine was built for another image, TensorRT-LLM version or GPU architecture is refused from
its published manifest, before a byte of its archive is downloaded: it is reported as failed
and neither installed nor loaded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from llm_release.artifacts.archive import extract_verified
from llm_release.artifacts.manifest import ARCHIVE_FILE, Manifest
from llm_release.artifacts.stores.base import ArtifactStore, Listing, ProgressLog, RemoteVersion, human_bytes
from llm_release.errors import ArtifactError, ArtifactNotFound, ChecksumMismatch, LLMReleaseError, SpecError
from llm_release.model_repo import install_staged, installed_versions, remove_version
from llm_release.provenance import RuntimeInfo, check_provenance, resolve

LOG = logging.getLogger("llm_release.artifacts.sync")

INSTALL, UNCHANGED, SKIP, CONFLICT, REMOVE, KEEP, MISSING, FAILED = (
    "install", "unchanged", "skip", "conflict", "remove", "keep", "missing", "failed")


@dataclass(frozen=True)
class SyncOptions:
    models: tuple[str, ...] | None = None  # None: every model the store publishes
    version: int | None = None  # only this version (of each model in scope)
    keep_latest: int = 3  # retention: the newest N published versions of each model
    dry_run: bool = False  # plan and report only
    prune: bool = True  # remove installed versions retention no longer keeps (never serving ones)

    def __post_init__(self):
        if isinstance(self.keep_latest, bool) or not isinstance(self.keep_latest, int) or self.keep_latest < 1:
            raise SpecError("keep_latest", f"{self.keep_latest!r} is not a positive integer", "keep at least 1 version")
        if self.version is not None and (isinstance(self.version, bool) or not isinstance(self.version, int)
                                         or self.version < 1):
            raise SpecError("version", f"{self.version!r} is not a positive integer", "use a published version number")


@dataclass
class Action:
    model: str
    version: int
    kind: str
    reason: str = ""
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0


@dataclass
class SyncReport:
    store: str
    repository: str
    dry_run: bool
    actions: list[Action] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    listing_requests: int = 0
    loaded: dict[str, list[int]] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def of_kind(self, kind: str) -> list[Action]:
        return [a for a in self.actions if a.kind == kind]

    @property
    def bytes_downloaded(self) -> int:
        return sum(a.bytes for a in self.actions)

    @property
    def files_installed(self) -> int:
        return sum(a.files for a in self.of_kind(INSTALL))

    @property
    def failed(self) -> bool:
        return bool(self.of_kind(FAILED) or self.of_kind(CONFLICT) or self.load_errors)

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc.update(bytes_downloaded=self.bytes_downloaded, files_installed=self.files_installed, failed=self.failed)
        return doc

    def summary(self) -> str:
        counts = {k: len(self.of_kind(k)) for k in (INSTALL, UNCHANGED, REMOVE, KEEP, SKIP, CONFLICT, MISSING, FAILED)}
        rate = self.bytes_downloaded / self.seconds if self.seconds else 0.0
        verb = "would install" if self.dry_run else "installed"
        text = (f"sync from {self.store} into {self.repository}: {verb} {counts[INSTALL]}, unchanged {counts[UNCHANGED]}, "
                f"{'would remove' if self.dry_run else 'removed'} {counts[REMOVE]}, kept serving {counts[KEEP]}, "
                f"skipped {counts[SKIP]}, conflicts {counts[CONFLICT]}, missing {counts[MISSING]}, failed {counts[FAILED]}; "
                f"{human_bytes(self.bytes_downloaded)} in {self.files_installed} files, {self.listing_requests} listing "
                f"request(s), {self.seconds:.2f} s ({human_bytes(rate)}/s)")
        if self.rejected:
            text += f"; refused entries: {len(self.rejected)}"
        return text


ServingFn = Callable[[str], set[int]]


# -- planning (reads only) ------------------------------------------------------------------
def _local_checksum(repo_root: Path, model: str, version: int, algorithm: str) -> str:
    return Manifest.of_engine_dir(repo_root / model / str(version)).checksum(algorithm)


def _same_as_published(store: ArtifactStore, repo_root: Path, remote: RemoteVersion) -> bool:
    local = _local_checksum(repo_root, remote.model, remote.version, remote.checksum_algorithm)
    if remote.manifest_checksum is not None:
        return local == remote.manifest_checksum
    published = store.fetch_manifest(remote.model, remote.version)  # the listing could not tell
    return published is not None and hashlib.new(remote.checksum_algorithm, published).hexdigest() == local


def plan_sync(store: ArtifactStore, listing: Listing, repo_root: Path, options: SyncOptions,
              serving: ServingFn | None) -> list[Action]:
    """What a sync would do, version by version. No change is made."""
    repo_root = Path(repo_root)
    published: dict[str, dict[int, RemoteVersion]] = {}
    for (model, version), remote in listing.versions.items():
        published.setdefault(model, {})[version] = remote
    actions: list[Action] = []
    for model in (list(options.models) if options.models else sorted(published)):
        remote = published.get(model, {})
        if options.version is not None:
            if options.version not in remote:
                actions.append(Action(model, options.version, MISSING,
                                      f"{model} v{options.version} is not published in {store.describe()}"))
                continue
            local = set(installed_versions(repo_root, model)) & {options.version}
            actions.append(_plan_published(store, repo_root, remote[options.version], options.version in local, True,
                                           options.keep_latest))
            continue
        if not remote:
            actions.append(Action(model, 0, MISSING, f"nothing of {model} is published in {store.describe()}"))
            continue
        wanted = set(sorted(remote)[-options.keep_latest:])
        local = set(installed_versions(repo_root, model))
        retired = {v for v in local if v < min(wanted)} if options.prune else set()
        live = _serving(serving, model) if retired else set()
        for version in sorted(set(remote) | local):
            if version in retired:
                actions.append(_plan_retired(model, version, live, len(wanted)))
            elif version in remote:
                actions.append(_plan_published(store, repo_root, remote[version], version in local,
                                               version in wanted, options.keep_latest))
    return actions


def _serving(serving: ServingFn | None, model: str) -> set[int] | None:
    return None if serving is None else serving(model)


def _plan_published(store, repo_root: Path, remote: RemoteVersion, installed: bool, wanted: bool, keep: int) -> Action:
    model, version = remote.model, remote.version
    if installed:
        try:
            same = _same_as_published(store, repo_root, remote)
        except LLMReleaseError as exc:
            return Action(model, version, CONFLICT, f"installed copy is unreadable ({exc}); left untouched")
        if same:
            return Action(model, version, UNCHANGED)
        return Action(model, version, CONFLICT, "installed version differs from the published one; "
                                               "installed versions are never overwritten: publish a new version")
    if wanted:
        return Action(model, version, INSTALL, human_bytes(remote.archive_size) if remote.archive_size else "")
    return Action(model, version, SKIP, f"older than the newest {keep} published versions")


def _plan_retired(model: str, version: int, live: set[int] | None, keep: int) -> Action:
    """An installed version retention no longer keeps: removed unless Triton serves it."""
    if live is None:
        return Action(model, version, KEEP, "retention would remove it, but Triton cannot be asked whether it serves it")
    if version in live:
        return Action(model, version, KEEP, "Triton serves it (unload it through deprecation first)")
    return Action(model, version, REMOVE, f"older than the newest {keep} published versions")


# -- doing ------------------------------------------------------------------------------
def install_from_store(store: ArtifactStore, repo_root: Path, remote: RemoteVersion,
                       log: logging.Logger = LOG, *, runtime: RuntimeInfo | None = None) -> Action:
    """Download, verify and atomically install one published version.

    With a `runtime`, its published metadata must match it (ProvenanceMismatch otherwise),
    checked before the archive is downloaded."""
    model, version = remote.model, remote.version
    started = time.monotonic()
    where = f"{store.describe()}/{model}/{version}"
    data = store.fetch_manifest(model, version)
    if data is None:
        raise ArtifactNotFound(f"{where}: manifest disappeared after the listing")
    if remote.manifest_checksum is not None and \
            hashlib.new(remote.checksum_algorithm, data).hexdigest() != remote.manifest_checksum:
        raise ChecksumMismatch(f"{where}/manifest.json changed between listing and download")
    manifest = Manifest.from_bytes(data, where=f"{where}/manifest.json")
    if (manifest.model, manifest.version) != (model, version):
        raise SpecError("manifest", f"{where}/manifest.json describes {manifest.model} v{manifest.version} but is "
                        f"stored as {model} v{version}; installing it would serve one engine under another's name",
                        "republish under the right model and version")
    if runtime is not None:
        check_provenance(manifest.metadata, runtime)
    counts = {"bytes": 0}

    def stage(tmp: Path) -> None:
        archive = tmp.parent / f"{tmp.name}.tar"  # same filesystem; a leftover is cleaned like tmp
        progress = ProgressLog(log, f"download {model} v{version}")
        name = manifest.archive_object
        try:
            try:
                store.download_archive(model, version, archive, progress=progress, name=name)
            except ArtifactNotFound:
                # published before archives were named by their manifest's digest
                name = ARCHIVE_FILE
                store.download_archive(model, version, archive, progress=progress, name=name)
            counts["bytes"] = archive.stat().st_size
            extract_verified(archive, tmp, manifest.files, where=f"{where}/{name}")
        finally:
            archive.unlink(missing_ok=True)

    install_staged(repo_root, model, version, stage, expected=manifest.metadata)
    return Action(model, version, INSTALL, "installed", bytes=counts["bytes"], files=len(manifest.files),
                  seconds=round(time.monotonic() - started, 3))


def run_sync(store: ArtifactStore, repo_root, options: SyncOptions = SyncOptions(), *,
             triton=None, listing: Listing | None = None, log: logging.Logger = LOG,
             runtime: RuntimeInfo | None = None) -> SyncReport:
    """Plan, then (unless dry run) install, prune and load. Failures of one version do not stop
    the others; the report says what failed and `report.failed` tells the caller to fail.

    `listing` lets a caller that already listed the source (a planning task) pass it on, so the
    source is listed once per run however many tasks share the work.

    `runtime`: what the repository's Triton runs (a RuntimeInfo, or a reader returning one,
    read once per run). None: provenance is not checked, as before.
    """
    started = time.monotonic()
    if runtime is not None and not options.dry_run:
        runtime = resolve(runtime)
    repo_root = Path(repo_root)
    if listing is None:
        listing = store.list_published()
    for entry in listing.rejected:
        log.warning("refused entry in %s: %s", store.describe(), entry)
    serving = (lambda model: set(triton.ready_versions(model))) if triton is not None else None
    planned = plan_sync(store, listing, repo_root, options, serving)
    report = SyncReport(store.describe(), str(repo_root), options.dry_run, rejected=list(listing.rejected),
                        listing_requests=listing.requests)
    new_versions: dict[str, list[int]] = {}
    for action in planned:
        if options.dry_run or action.kind not in (INSTALL, REMOVE):
            report.actions.append(action)
            continue
        try:
            if action.kind == INSTALL:
                action = install_from_store(store, repo_root, listing.versions[(action.model, action.version)], log,
                                            runtime=runtime)
                new_versions.setdefault(action.model, []).append(action.version)
            else:
                remove_version(repo_root, action.model, action.version)
        except (LLMReleaseError, OSError) as exc:
            action = Action(action.model, action.version, FAILED, f"{action.kind}: {exc}")
        report.actions.append(action)
    for action in report.actions:
        log.info("%-9s %s v%s %s", action.kind, action.model, action.version, action.reason)
    if triton is not None and not options.dry_run:
        _load_new_versions(triton, new_versions, report, log)
    report.seconds = round(time.monotonic() - started, 3)
    log.info("%s", report.summary())
    return report


def _load_new_versions(triton, new_versions: dict[str, list[int]], report: SyncReport, log: logging.Logger) -> None:
    for model, versions in sorted(new_versions.items()):
        try:
            ready = triton.ready_versions(model)
            wanted = sorted(set(ready) | set(versions))
            log.info("loading %s versions %s in Triton (serving now: %s)", model, wanted, ready or "none")
            report.loaded[model] = triton.load_versions(model, wanted)
        except LLMReleaseError as exc:
            report.load_errors[model] = str(exc)
            log.error("loading %s failed: %s", model, exc)


NOTHING_TO_DO = (UNCHANGED, SKIP, KEEP)


def models_with_work(report: SyncReport) -> list[str]:
    """Models whose planned actions change something or need attention (conflicts, missing)."""
    return sorted({a.model for a in report.actions if a.kind not in NOTHING_TO_DO})


def raise_for_report(report: SyncReport) -> None:
    """Turn a report with failures into one error (Airflow then retries the task)."""
    if not report.failed:
        return
    problems = [f"{a.model} v{a.version}: {a.kind}: {a.reason}" for a in report.actions if a.kind in (FAILED, CONFLICT)]
    problems += [f"{m}: load failed: {e}" for m, e in report.load_errors.items()]
    raise ArtifactError("sync incomplete: " + "; ".join(problems))
