"""ArtifactoryStore against the Artifactory REST API double: a real reference engine published,
listed, read back and verified, immutability, authentication and retry behaviour."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import requests

from llm_release.artifacts.archive import extract_verified, pack_engine
from llm_release.artifacts.manifest import Manifest
from llm_release.artifacts.stores.artifactory import ArtifactoryStore
from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import make_reference_checkpoint
from llm_release.errors import ArtifactAuthError, ArtifactError, ArtifactImmutable, ChecksumMismatch
from llm_release.metadata import sha256_file
from tests.doubles.artifactory import ArtifactoryDouble

MODEL = "reference_lm"
VERSION = 3
PREFIX = "models"
PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 64}
RETRIES = 3
ARCHIVE_PATH = f"{PREFIX}/{MODEL}/{VERSION}/engine.tar"
MANIFEST_PATH = f"{PREFIX}/{MODEL}/{VERSION}/manifest.json"
DOWNLOAD = rf"^/llm-generic-local/{PREFIX}/{MODEL}/{VERSION}/engine\.tar$"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A real reference engine, its archive and its manifest."""
    work = tmp_path_factory.mktemp("artifactory-engine")
    checkpoint = make_reference_checkpoint(work / "ckpt", seed=7)
    build_engine(checkpoint, work / "engine", PARAMS, model_name=MODEL, version=VERSION)
    archive = work / "engine.tar"
    pack_engine(work / "engine", archive)
    return {"dir": work / "engine", "archive": archive, "manifest": Manifest.of_engine_dir(work / "engine")}


@pytest.fixture()
def double():
    with ArtifactoryDouble(users={"deployer": "s3cret-pass"}) as server:
        yield server


def make_store(double, **kwargs) -> ArtifactoryStore:
    options = {"prefix": PREFIX, "token": double.token, "retries": RETRIES, "backoff_s": 0.01, **kwargs}
    return ArtifactoryStore(double.base_url, double.repo, **options)


@pytest.fixture()
def store(double):
    return make_store(double)


def publish(store, engine, progress=None) -> None:
    manifest = engine["manifest"]
    store.upload_archive(MODEL, VERSION, engine["archive"], sha256=sha256_file(engine["archive"]),
                         properties=manifest.properties, progress=progress)
    store.upload_manifest(MODEL, VERSION, manifest.to_bytes(), properties=manifest.properties)


def test_a_published_version_is_listed_in_one_request_with_its_manifest_sha256(double, store, engine):
    calls = []
    publish(store, engine, progress=lambda done, total: calls.append((done, total)))
    size = engine["archive"].stat().st_size
    assert calls[-1] == (size, size)

    before = len(double.requests)
    listing = store.list_published()
    assert len(double.requests) - before == 1 and listing.requests == 1
    assert listing.rejected == []
    remote = listing.versions[(MODEL, VERSION)]
    assert remote.manifest_checksum == engine["manifest"].checksum("sha256")
    assert remote.checksum_algorithm == "sha256"
    assert remote.archive_size == size


def test_properties_and_checksums_are_stored_with_the_files(double, store, engine):
    publish(store, engine)
    expected = {key: [value] for key, value in engine["manifest"].properties.items()}
    assert store.properties(MODEL, VERSION) == expected
    assert store.properties(MODEL, VERSION, "engine.tar") == expected
    info = store.item_info(MODEL, VERSION, "engine.tar")
    assert "sha256:" + info["checksums"]["sha256"] == sha256_file(engine["archive"])
    assert info["checksums"] == info["originalChecksums"]  # we sent every checksum header


def test_download_and_verified_extraction_round_trip(store, engine, tmp_path):
    publish(store, engine)
    calls = []
    written = store.download_archive(MODEL, VERSION, tmp_path / "engine.tar",
                                     progress=lambda done, total: calls.append((done, total)))
    assert written == engine["archive"].stat().st_size and calls[-1] == (written, written)
    manifest = Manifest.from_bytes(store.fetch_manifest(MODEL, VERSION))
    assert manifest == engine["manifest"]
    extract_verified(tmp_path / "engine.tar", tmp_path / "out", manifest.files)
    for name in manifest.files:
        assert (tmp_path / "out" / name).read_bytes() == (engine["dir"] / name).read_bytes()


def test_republishing_identical_bytes_is_a_no_op(double, store, engine):
    publish(store, engine)
    puts = double.count("PUT")
    publish(store, engine)
    assert double.count("PUT") == puts == 2


def test_a_published_manifest_is_never_replaced_by_other_bytes(double, store, engine):
    publish(store, engine)
    original = double.file(MANIFEST_PATH).data
    with pytest.raises(ArtifactImmutable) as err:
        store.upload_manifest(MODEL, VERSION, original + b"\n", properties=engine["manifest"].properties)
    assert f"{MODEL} v{VERSION}" in str(err.value) and "immutable" in str(err.value)
    assert double.file(MANIFEST_PATH).data == original
    assert double.count("PUT", "manifest.json") == 1


def test_a_published_archive_is_never_replaced_by_other_bytes(double, store, engine, tmp_path):
    publish(store, engine)
    other = tmp_path / "other.tar"
    other.write_bytes(engine["archive"].read_bytes() + b"\0" * 512)
    with pytest.raises(ArtifactImmutable):
        store.upload_archive(MODEL, VERSION, other, sha256=sha256_file(other), properties={})
    assert double.file(ARCHIVE_PATH).data == engine["archive"].read_bytes()


def test_a_wrong_token_is_reported_at_once_without_the_token(double, engine):
    store = make_store(double, token="wrong-token-4f2a")
    with pytest.raises(ArtifactAuthError) as err:
        store.list_published()
    message = str(err.value)
    assert "401" in message and "token" in message and "wrong-token-4f2a" not in message
    with pytest.raises(ArtifactAuthError):
        store.upload_archive(MODEL, VERSION, engine["archive"], sha256=sha256_file(engine["archive"]), properties={})
    assert double.count() == 2  # one request each: no retry
    assert double.file(ARCHIVE_PATH) is None


def test_basic_auth_with_user_and_password(double, engine):
    store = make_store(double, token=None, username="deployer", password="s3cret-pass")
    publish(store, engine)
    assert (MODEL, VERSION) in store.list_published().versions
    with pytest.raises(ArtifactAuthError) as err:
        make_store(double, token=None, username="deployer", password="not-it").list_published()
    assert "not-it" not in str(err.value)


def test_a_download_is_retried_through_two_503s(double, store, engine, tmp_path, caplog):
    publish(store, engine)
    double.fail_next("GET", DOWNLOAD, times=2, status=503)
    with caplog.at_level(logging.WARNING, logger="llm_release.artifacts.stores.artifactory"):
        written = store.download_archive(MODEL, VERSION, tmp_path / "engine.tar")
    assert written == engine["archive"].stat().st_size
    assert double.count("GET", DOWNLOAD) == 3
    retries = [r.getMessage().split(", retry ")[1][:6] for r in caplog.records if r.levelno >= logging.WARNING]
    assert retries == ["1 of 3", "2 of 3"]


def test_an_upload_is_retried_and_the_body_sent_again_in_full(double, store, engine):
    double.fail_next("PUT", r"engine\.tar$", times=1, status=500)
    publish(store, engine)
    assert double.count("PUT", r"engine\.tar$") == 2
    assert double.file(ARCHIVE_PATH).data == engine["archive"].read_bytes()


def test_5xx_beyond_the_retries_fails_naming_the_path(double, store, engine):
    double.fail_next("GET", r"manifest\.json$", times=RETRIES + 1, status=500, message="Internal Server Error")
    with pytest.raises(ArtifactError) as err:
        store.fetch_manifest(MODEL, VERSION)
    assert MANIFEST_PATH in str(err.value) and "HTTP 500" in str(err.value)
    assert double.token not in str(err.value)
    assert double.count("GET", r"manifest\.json$") == RETRIES + 1


def test_an_unreachable_server_is_retried_then_named(engine, caplog):
    with ArtifactoryDouble() as gone:
        store = make_store(gone, retries=1)
    with caplog.at_level(logging.WARNING, logger="llm_release.artifacts.stores.artifactory"):
        with pytest.raises(ArtifactError) as err:
            store.list_published()
    assert f"/api/storage/{gone.repo}/{PREFIX}" in str(err.value) and "ConnectionError" in str(err.value)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_409_is_final_and_carries_artifactorys_message(double, store, engine):
    double.fail_next("PUT", r"engine\.tar$", status=409, message="Property key 'gpu_arch' is not allowed")
    with pytest.raises(ArtifactError) as err:
        store.upload_archive(MODEL, VERSION, engine["archive"], sha256=sha256_file(engine["archive"]), properties={})
    assert "Property key 'gpu_arch' is not allowed" in str(err.value)
    assert double.count("PUT") == 1


def test_the_double_refuses_bytes_that_do_not_match_the_checksum_header(double):
    response = requests.put(f"{double.base_url}/{double.repo}/x/file.bin", data=b"abc",
                            headers={"Authorization": f"Bearer {double.token}", "X-Checksum-Sha256": "0" * 64})
    assert response.status_code == 409
    assert response.json()["errors"][0]["status"] == 409 and "sha256" in response.json()["errors"][0]["message"]
    assert double.file("x/file.bin") is None


def test_a_corrupted_stored_archive_is_caught_on_download(double, store, engine, tmp_path):
    publish(store, engine)
    double.corrupt(ARCHIVE_PATH)
    with pytest.raises(ChecksumMismatch) as err:
        store.download_archive(MODEL, VERSION, tmp_path / "engine.tar")
    assert ARCHIVE_PATH in str(err.value)
    assert double.count("GET", DOWNLOAD) == 1


def test_a_manifest_under_a_non_numeric_version_is_rejected_with_the_reason(double, store, engine):
    publish(store, engine)
    double.seed(f"{PREFIX}/{MODEL}/v2/manifest.json", engine["manifest"].to_bytes())
    listing = store.list_published()
    assert list(listing.versions) == [(MODEL, VERSION)]
    assert len(listing.rejected) == 1
    assert listing.rejected[0].startswith(f"{PREFIX}/{MODEL}/v2/manifest.json: ") and "'v2'" in listing.rejected[0]


def test_an_archive_without_a_manifest_is_not_published(double, store, engine):
    store.upload_archive(MODEL, VERSION, engine["archive"], sha256=sha256_file(engine["archive"]), properties={})
    listing = store.list_published()
    assert listing.versions == {} and listing.rejected == []
    assert store.fetch_manifest(MODEL, VERSION) is None


def test_a_prefix_that_does_not_exist_yet_is_an_empty_listing(double, store):
    listing = store.list_published()
    assert listing.versions == {} and listing.rejected == [] and listing.requests == 1


def test_describe_names_the_location_without_credentials():
    store = ArtifactoryStore("https://ci:hunter2@artifactory.example.com/artifactory", "llm-local", prefix="/models/")
    assert store.describe() == "artifactory https://artifactory.example.com/artifactory/llm-local/models"


HOOK_CHECK = """
import json
from llm_release_airflow.hooks.artifactory import ArtifactoryHook
store = ArtifactoryHook().get_store()
listing = store.list_published()
print(json.dumps([store.describe(), sorted(f"{m}/{v}" for m, v in listing.versions)]))
"""


def test_the_airflow_connection_gives_a_store_that_reaches_artifactory(double, store, engine, tmp_path):
    """Connection fields as documented on ArtifactoryHook; Airflow runs in a child process."""
    publish(store, engine)
    conn = {"conn_type": "artifactory", "host": double.base_url, "password": double.token,
            "extra": {"repo": double.repo, "prefix": PREFIX}}
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "AIRFLOW_CONN_ARTIFACTORY_DEFAULT": json.dumps(conn)}
    result = subprocess.run([sys.executable, "-c", HOOK_CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    described, versions = json.loads(result.stdout.strip().splitlines()[-1])
    assert described == f"artifactory {double.base_url}/{double.repo}/{PREFIX}"
    assert versions == [f"{MODEL}/{VERSION}"]


def test_sync_from_artifactory_installs_once_then_moves_nothing(double, store, engine, tmp_path):
    from llm_release.artifacts.publish import publish_engine
    from llm_release.artifacts.sync import SyncOptions, run_sync
    from llm_release.model_repo import installed_versions

    assert publish_engine(engine["dir"], store).uploaded
    meta = engine["manifest"].metadata
    repo = tmp_path / "repo"
    first = run_sync(store, repo, SyncOptions())
    assert [(a.version, a.kind) for a in first.actions] == [(meta.version, "install")]
    assert installed_versions(repo, meta.model) == [meta.version]
    gets_before = double.count("GET")
    second = run_sync(store, repo, SyncOptions())
    assert [a.kind for a in second.actions] == ["unchanged"]
    assert second.bytes_downloaded == 0
    assert double.count("GET") - gets_before == 1  # the one listing


def test_bytes_damaged_on_the_way_are_refused_even_where_the_server_accepts_them(engine):
    """Under the "server" checksum policy Artifactory stores what arrived and answers 201: the
    client compares the checksums in that answer with what it sent, and publishes nothing."""
    from llm_release.artifacts.publish import publish_engine
    from llm_release.errors import ChecksumMismatch

    with ArtifactoryDouble(checksum_policy="server") as server:
        store = make_store(server)
        server.damage_next_deploy(r"\.tar$")
        with pytest.raises(ChecksumMismatch, match="damaged on the way"):
            publish_engine(engine["dir"], store)
        assert store.fetch_manifest(MODEL, VERSION) is None  # invisible: no sync can pick it up
        assert publish_engine(engine["dir"], store).uploaded  # a retry deploys it whole
        assert (MODEL, VERSION) in store.list_published().versions


def test_a_redirected_download_is_still_verified(engine, tmp_path):
    """With download redirect on, the bytes come from storage without X-Checksum-Sha256: the
    client asks Artifactory for the sha256 instead of skipping the check."""
    from llm_release.errors import ChecksumMismatch

    with ArtifactoryDouble(redirect_downloads=True) as server:
        store = make_store(server)
        publish(store, engine)
        written = store.download_archive(MODEL, VERSION, tmp_path / "engine.tar")
        assert written == engine["archive"].stat().st_size
        assert server.count("GET", r"^/api/storage/.*engine\.tar$") >= 1  # the checksum came from the API
        server.corrupt(ARCHIVE_PATH)
        with pytest.raises(ChecksumMismatch):
            store.download_archive(MODEL, VERSION, tmp_path / "again.tar")
        assert not (tmp_path / "again.tar").exists()


PUBLISHER = {"token-user": {"read", "deploy", "annotate"}}  # least privilege: no Delete


@pytest.fixture(scope="module")
def other_engine(tmp_path_factory):
    """The same model and version built from another checkpoint (engine builds differ too)."""
    work = tmp_path_factory.mktemp("artifactory-other")
    checkpoint = make_reference_checkpoint(work / "ckpt", seed=8)
    build_engine(checkpoint, work / "engine", PARAMS, model_name=MODEL, version=VERSION)
    return {"dir": work / "engine", "manifest": Manifest.of_engine_dir(work / "engine")}


@pytest.mark.parametrize("hide", [False, True])
def test_a_publisher_token_without_delete_loses_a_race_cleanly_instead_of_overwriting(engine, other_engine, hide):
    """Both publishers passed the "not published" check; the other one's manifest lands first.
    Replacing it needs Delete, which a publisher's token does not have: the refusal (403, or 404
    where unauthorized items are hidden) becomes ArtifactImmutable naming both, and the
    version stays the other publisher's, whole."""
    from llm_release.artifacts.publish import publish_engine

    theirs = other_engine["manifest"].to_bytes()
    with ArtifactoryDouble(permissions=PUBLISHER, hide_unauthorized=hide) as server:
        store = make_store(server)
        server.land_first(r"manifest\.json$", theirs)
        with pytest.raises(ArtifactImmutable) as err:
            publish_engine(engine["dir"], store)
        assert other_engine["manifest"].digest in str(err.value) and engine["manifest"].digest in str(err.value)
        assert server.file(MANIFEST_PATH).data == theirs  # not overwritten


def test_a_missing_permission_is_named(engine):
    with ArtifactoryDouble(permissions={"token-user": {"read", "deploy"}}) as server:  # no Annotate
        store = make_store(server)
        with pytest.raises(ArtifactAuthError) as err:
            publish(store, engine)
        assert "403" in str(err.value) and "Annotate" in str(err.value) and "lacks a permission" in str(err.value)
    with ArtifactoryDouble(permissions={"token-user": {"deploy", "annotate"}}) as server:  # no Read
        with pytest.raises(ArtifactAuthError, match="needs Read"):
            make_store(server).download_archive(MODEL, VERSION, engine["archive"].parent / "nothing.tar")
