"""Publish to S3 (moto server over HTTP) and sync into a model repository."""

from __future__ import annotations

import json

import pytest

from llm_release.artifacts.manifest import Manifest
from llm_release.artifacts.publish import publish_engine
from llm_release.artifacts.sync import CONFLICT, FAILED, INSTALL, KEEP, REMOVE, UNCHANGED, SyncOptions, raise_for_report, run_sync
from llm_release.errors import ArtifactError, ArtifactImmutable
from llm_release.model_repo import install_version, installed_versions

PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 64}


@pytest.fixture()
def store(s3_store):
    return s3_store


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(model, version, seed) -> engine dir (cached per module)."""
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint

    root = tmp_path_factory.mktemp("s3engines")
    made = {}

    def _build(model: str, version: int, seed: int = 1):
        key = (model, version, seed)
        if key not in made:
            ckpt = root / f"ckpt{seed}"
            if not ckpt.exists():
                make_reference_checkpoint(ckpt, seed=seed)
            out = root / f"{model}-v{version}-s{seed}"
            build_engine(ckpt, out, PARAMS, model_name=model, version=version)
            made[key] = out
        return made[key]

    return _build


def kinds(report):
    return {(a.model, a.version): a.kind for a in report.actions}


def test_publish_then_sync_installs_once_and_a_second_sync_moves_zero_bytes(store, build, tmp_path):
    engine = build("m", 1)
    result = publish_engine(engine, store)
    assert result.uploaded and result.manifest_digest == Manifest.of_engine_dir(engine).digest
    repo = tmp_path / "repo"
    first = run_sync(store, repo)
    assert kinds(first) == {("m", 1): INSTALL}
    assert first.bytes_downloaded > 0 and first.files_installed == len(Manifest.of_engine_dir(engine).files)
    assert installed_versions(repo, "m") == [1]
    assert not [p for p in (repo / "m").iterdir() if p.name.startswith(".tmp-")]
    second = run_sync(store, repo)
    assert kinds(second) == {("m", 1): UNCHANGED}
    assert second.bytes_downloaded == 0 and second.listing_requests == 1


def test_publish_is_immutable_and_a_retry_is_a_no_op(store, build):
    publish_engine(build("m", 1, seed=1), store)
    again = publish_engine(build("m", 1, seed=1), store)
    assert again.uploaded is False
    before = store.fetch_manifest("m", 1)
    with pytest.raises(ArtifactImmutable) as err:
        publish_engine(build("m", 1, seed=2), store)
    assert "m v1" in str(err.value) and "immutable" in str(err.value)
    assert store.fetch_manifest("m", 1) == before


def test_an_archive_without_its_manifest_is_invisible(store, build, tmp_path):
    from llm_release.artifacts.archive import pack_engine

    archive = tmp_path / "engine.tar"
    pack_engine(build("m", 2), archive)
    store.upload_archive("m", 2, archive, sha256="sha256:unused", properties={})  # a publish that died here
    listing = store.list_published()
    assert ("m", 2) not in listing.versions
    report = run_sync(store, tmp_path / "repo", SyncOptions(models=("m",)))
    assert installed_versions(tmp_path / "repo", "m") == []
    assert [a.kind for a in report.actions] == ["missing"]


def test_retention_installs_the_newest_and_prunes_only_what_is_not_served(store, build, tmp_path):
    repo = tmp_path / "repo"
    for v in (1, 2, 3, 4):
        publish_engine(build("m", v), store)
    install_version(build("m", 1), repo)
    install_version(build("m", 2), repo)
    served = {"m": {1}}
    from llm_release.artifacts.sync import plan_sync

    listing = store.list_published()
    planned = {(a.model, a.version): a.kind for a in plan_sync(store, listing, repo, SyncOptions(keep_latest=2),
                                                               lambda m: served[m])}
    assert planned == {("m", 1): KEEP, ("m", 2): REMOVE, ("m", 3): INSTALL, ("m", 4): INSTALL}
    dry = run_sync(store, repo, SyncOptions(keep_latest=2, dry_run=True))
    assert installed_versions(repo, "m") == [1, 2] and dry.bytes_downloaded == 0
    assert {a.version for a in dry.of_kind(INSTALL)} == {3, 4}
    # without Triton, nothing is removed: whether a version serves cannot be known
    assert {a.version for a in dry.of_kind(KEEP)} == {1, 2}
    real = run_sync(store, repo, SyncOptions(keep_latest=2))
    assert installed_versions(repo, "m") == [1, 2, 3, 4] and real.bytes_downloaded > 0
    assert kinds(real)[("m", 3)] == INSTALL


def test_one_version_only(store, build, tmp_path):
    for v in (1, 2, 3):
        publish_engine(build("m", v), store)
    report = run_sync(store, tmp_path / "repo", SyncOptions(models=("m",), version=2))
    assert kinds(report) == {("m", 2): INSTALL}
    assert installed_versions(tmp_path / "repo", "m") == [2]


def test_installed_version_with_other_bytes_is_a_conflict_and_stays(store, build, tmp_path):
    repo = tmp_path / "repo"
    install_version(build("m", 1, seed=1), repo)
    before = (repo / "m" / "1" / "metadata.json").read_bytes()
    publish_engine(build("m", 1, seed=2), store)
    report = run_sync(store, repo)
    assert kinds(report) == {("m", 1): CONFLICT}
    assert (repo / "m" / "1" / "metadata.json").read_bytes() == before
    with pytest.raises(ArtifactError) as err:
        raise_for_report(report)
    assert "m v1" in str(err.value)


def test_a_corrupted_archive_is_caught_and_nothing_is_installed(store, build, tmp_path, s3_client):
    from llm_release.artifacts.archive import pack_engine

    engine = build("m", 1)
    publish_engine(engine, store)
    archive = tmp_path / "bad.tar"
    pack_engine(engine, archive)
    data = bytearray(archive.read_bytes())
    data[2048] ^= 0xFF  # one byte of the first file's contents
    key = f"engines/m/1/{Manifest.of_engine_dir(engine).archive_object}"
    s3_client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data))
    repo = tmp_path / "repo"
    report = run_sync(store, repo)
    assert kinds(report) == {("m", 1): FAILED}
    assert "sha256" in report.actions[0].reason
    assert installed_versions(repo, "m") == []
    assert not [p for p in (repo / "m").iterdir() if p.name.startswith(".tmp-")]


def test_a_non_numeric_version_is_refused_by_name(store, s3_client, tmp_path):
    s3_client.put_object(Bucket=store.bucket, Key="engines/m/v2/manifest.json", Body=b"{}")
    listing = store.list_published()
    assert listing.versions == {}
    assert any("'v2'" in r for r in listing.rejected)
    report = run_sync(store, tmp_path / "repo")
    assert report.rejected == listing.rejected


def test_cli_publishes_and_syncs_with_credentials_from_the_environment(store, build, tmp_path, stack):
    import os
    import subprocess
    import sys

    conn = json.loads(open(stack["connections"]["json"]).read())["llm_artifacts_s3"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=conn["login"], AWS_SECRET_ACCESS_KEY=conn["password"],
               AWS_DEFAULT_REGION=conn["extra"]["region_name"], AWS_ENDPOINT_URL=conn["extra"]["endpoint_url"])
    common = ["--bucket", store.bucket, "--prefix", "engines"]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "llm_release.cli", *args, *common], env=env,
                              capture_output=True, text=True, timeout=120)

    out = cli("publish", "--engine", str(build("m", 1)), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["uploaded"] is True
    assert conn["password"] not in out.stdout + out.stderr
    dry = cli("sync", "--repo-dir", str(tmp_path / "repo"), "--dry-run")
    assert dry.returncode == 0 and "would install 1" in dry.stdout
    assert not (tmp_path / "repo" / "m" / "1").exists()
    real = cli("sync", "--repo-dir", str(tmp_path / "repo"), "--json")
    assert real.returncode == 0, real.stderr
    assert [a["kind"] for a in json.loads(real.stdout)["actions"]] == ["install"]
    assert installed_versions(tmp_path / "repo", "m") == [1]


def test_a_real_sync_removes_the_directory_of_a_retired_version_and_keeps_the_served_one(store, build, stack,
                                                                                          triton):
    model = "sync_retired_lm"  # the stack's repository is shared: a name no other module uses
    repo = __import__("pathlib").Path(stack["model_repository"])
    for v in (1, 2, 3, 4):
        publish_engine(build(model, v), store)
    install_version(build(model, 1), repo)
    install_version(build(model, 2), repo)
    triton.load_versions(model, [1])  # v1 serves; v2 is installed and idle
    try:
        report = run_sync(store, repo, SyncOptions(models=(model,), keep_latest=2), triton=triton)
        assert kinds(report) == {(model, 1): KEEP, (model, 2): REMOVE, (model, 3): INSTALL, (model, 4): INSTALL}
        assert not (repo / model / "2").exists()  # retired: its directory is gone, not just reported
        assert sorted(p.name for p in (repo / model).iterdir() if p.is_dir()) == ["1", "3", "4"]
        assert installed_versions(repo, model) == [1, 3, 4]
        assert triton.ready_versions(model) == [1, 3, 4]
    finally:
        triton.unload_versions(model, triton.ready_versions(model) or [1])


def test_a_manifest_stored_under_another_version_is_refused_and_nothing_is_installed(store, build, tmp_path,
                                                                                       s3_client):
    """Published as m v2, copied (by hand, or a bad migration) under m/3: installing it as v3
    would serve v2's engine under v3's name."""
    publish_engine(build("m", 2), store)
    for name in ("manifest.json", Manifest.of_engine_dir(build("m", 2)).archive_object):
        s3_client.copy_object(Bucket=store.bucket, Key=f"engines/m/3/{name}",
                              CopySource={"Bucket": store.bucket, "Key": f"engines/m/2/{name}"})
    repo = tmp_path / "repo"
    report = run_sync(store, repo, SyncOptions(models=("m",), version=3))
    assert kinds(report) == {("m", 3): FAILED}
    reason = report.actions[0].reason
    assert "m v3" in reason and "m v2" in reason, reason  # where it is stored, and what it describes
    assert installed_versions(repo, "m") == []
    assert not (repo / "m" / "3").exists() and not (repo / "m" / "2").exists()


class _PausingStore:
    """The real S3 store, but the first publisher stops between its "not published yet" check and
    its archive upload until told to go on: the other publisher then publishes whole, and this
    one's archive upload comes after the winner's (the interleaving that used to overwrite it)."""

    def __init__(self, store, checked, go):
        self._store, self._checked, self._go = store, checked, go

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upload_archive(self, *args, **kwargs):
        self._checked.set()
        assert self._go.wait(60)
        self._store.upload_archive(*args, **kwargs)


def _archives(s3_client, store, model, version) -> set[str]:
    listed = s3_client.list_objects_v2(Bucket=store.bucket, Prefix=f"engines/{model}/{version}/").get("Contents", [])
    return {o["Key"].rpartition("/")[2] for o in listed if o["Key"].endswith(".tar")}


def test_two_publishers_racing_for_one_version_leave_one_consistent_version(store, build, tmp_path, s3_client):
    import threading

    from llm_release.model_repo import metadata_of

    first, second = build("race", 1, seed=1), build("race", 1, seed=2)  # TensorRT builds differ too
    checked, go = threading.Event(), threading.Event()
    outcome = {}

    def slow_publisher():
        try:
            outcome["first"] = publish_engine(first, _PausingStore(store, checked, go))
        except ArtifactImmutable as exc:
            outcome["first"] = exc

    worker = threading.Thread(target=slow_publisher)
    worker.start()
    assert checked.wait(60)
    won = publish_engine(second, store)  # passes its check too, and publishes first
    go.set()
    worker.join(60)
    lost = outcome["first"]
    assert won.uploaded and isinstance(lost, ArtifactImmutable)
    mine, theirs = Manifest.of_engine_dir(first).digest, Manifest.of_engine_dir(second).digest
    assert mine in str(lost) and theirs in str(lost)  # both digests named
    # what the winner published is whole: its manifest, its archive, and the loser's archive gone
    assert Manifest.from_bytes(store.fetch_manifest("race", 1)).digest == theirs
    assert _archives(s3_client, store, "race", 1) == {Manifest.of_engine_dir(second).archive_object}
    repo = tmp_path / "repo"
    assert kinds(run_sync(store, repo)) == {("race", 1): INSTALL}
    assert Manifest.for_engine(metadata_of(repo, "race", 1)).digest == theirs


def test_publishers_started_together_many_times_end_with_one_version_each(store, build, tmp_path, s3_client):
    import threading

    engines = (build("race", 1, seed=1), build("race", 1, seed=2))
    digests = {Manifest.of_engine_dir(e).digest for e in engines}
    for version in range(2, 12):
        pair = [build("race", version, seed=1), build("race", version, seed=2)]
        start = threading.Barrier(2)
        results = [None, None]

        def run(i):
            start.wait()
            try:
                results[i] = publish_engine(pair[i], store)
            except ArtifactImmutable as exc:
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        won = [r for r in results if not isinstance(r, Exception)]
        lost = [r for r in results if isinstance(r, ArtifactImmutable)]
        assert len(won) == 1 and len(lost) == 1, results
        published = Manifest.from_bytes(store.fetch_manifest("race", version))
        assert published.digest == won[0].manifest_digest
        assert _archives(s3_client, store, "race", version) == {published.archive_object}
    report = run_sync(store, tmp_path / "repo", SyncOptions(keep_latest=20))
    assert {a.kind for a in report.actions} == {INSTALL} and not report.failed
    assert len(digests) == 2


def test_a_version_published_before_archives_were_named_by_digest_still_syncs(store, build, tmp_path):
    from llm_release.artifacts.archive import pack_engine
    from llm_release.artifacts.manifest import ARCHIVE_FILE
    from llm_release.metadata import sha256_file

    engine = build("legacy", 1)
    manifest = Manifest.of_engine_dir(engine)
    archive = tmp_path / "engine.tar"
    pack_engine(engine, archive)
    # the layout every earlier release wrote: <model>/<version>/engine.tar
    store.upload_archive("legacy", 1, archive, sha256=sha256_file(archive), properties=manifest.properties,
                         name=ARCHIVE_FILE)
    store.upload_manifest("legacy", 1, manifest.to_bytes(), properties=manifest.properties)
    repo = tmp_path / "repo"
    report = run_sync(store, repo)
    assert kinds(report) == {("legacy", 1): INSTALL} and not report.failed
    assert installed_versions(repo, "legacy") == [1]
    assert kinds(run_sync(store, repo)) == {("legacy", 1): UNCHANGED}
    assert publish_engine(engine, store).uploaded is False  # the same engine again: a no-op, as before
