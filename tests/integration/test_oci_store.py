"""OciStore against a real registry (Debian's docker-registry): publish, list, pin, pull, immutability."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from llm_release.artifacts.archive import extract_verified, pack_engine
from llm_release.artifacts.manifest import Manifest
from llm_release.artifacts.stores.oci import (
    ARTIFACT_TYPE,
    ENGINE_LAYER_TYPE,
    MANIFEST_LAYER_TYPE,
    OCI_MANIFEST_TYPE,
    OciStore,
)
from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import make_reference_checkpoint
from llm_release.errors import (
    ArtifactAuthError,
    ArtifactError,
    ArtifactImmutable,
    ArtifactNotFound,
    ChecksumMismatch,
)
from llm_release.metadata import sha256_file
from llm_release.stack.processes import free_port
from tests.fixtures.registry import running_registry

MODEL = "reference_lm"
PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 64}
CREATED_AT = "2026-01-31T12:00:00Z"


def _engine(root, name, *, seed, version):
    """A built and packed reference engine: (engine dir, archive, manifest)."""
    checkpoint = make_reference_checkpoint(root / f"ckpt-{name}", seed=seed)
    engine_dir = root / name
    build_engine(checkpoint, engine_dir, PARAMS, model_name=MODEL, version=version, created_at=CREATED_AT)
    archive = root / f"{name}.tar"
    pack_engine(engine_dir, archive)
    return engine_dir, archive, Manifest.of_engine_dir(engine_dir)


def _publish(store, archive, manifest, progress=None):
    store.upload_archive(manifest.model, manifest.version, archive, sha256=sha256_file(archive),
                         properties=manifest.properties, progress=progress)
    store.upload_manifest(manifest.model, manifest.version, manifest.to_bytes(), properties=manifest.properties)


def _publish_as(store, model, version, archive, manifest):
    """Publish the bytes of `manifest` under another model name or version (listing tests only)."""
    store.upload_archive(model, version, archive, sha256=sha256_file(archive), properties={})
    store.upload_manifest(model, version, manifest.to_bytes(), properties={})


def _digest_of_tag(registry, repo, tag):
    response = requests.head(f"http://{registry}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST_TYPE})
    assert response.status_code == 200
    return response.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("oci-engines")
    return {"v1": _engine(root, "v1", seed=1, version=1), "other_v1": _engine(root, "other_v1", seed=2, version=1),
            "v7": _engine(root, "v7", seed=1, version=7)}


@pytest.fixture(scope="module")
def published(oci_registry, engines):
    """Version 1 published once: its manifest, archive, pinned reference and progress reports."""
    store = OciStore(oci_registry, insecure=True)
    _, archive, manifest = engines["v1"]
    reports = []
    _publish(store, archive, manifest, progress=lambda done, total: reports.append((done, total)))
    return {"manifest": manifest, "archive": archive, "progress": reports,
            "pinned": store.pinned_reference(MODEL, 1)}


def test_published_version_is_listed_with_the_sha256_of_its_manifest(oci_registry, published):
    manifest, archive = published["manifest"], published["archive"]
    listing = OciStore(oci_registry, insecure=True).list_published()
    remote = listing.versions[(MODEL, 1)]
    assert remote.manifest_checksum == manifest.checksum("sha256")
    assert remote.checksum_algorithm == "sha256"
    assert remote.archive_size == archive.stat().st_size
    assert published["progress"][-1] == (archive.stat().st_size, archive.stat().st_size)


def test_listing_costs_a_catalog_page_a_tags_list_per_model_and_a_get_per_version(oci_registry, engines):
    """Namespace "cost": models a (tags 1, 2, draft) and b (tag 1); namespace "elsewhere" is not read."""
    _, archive, manifest = engines["v1"]
    for namespace, model, version in (("cost", "a", 1), ("cost", "a", 2), ("cost", "b", 1), ("elsewhere", "c", 1)):
        _publish_as(OciStore(oci_registry, namespace=namespace, insecure=True), model, version, archive, manifest)
    body = requests.get(f"http://{oci_registry}/v2/cost/a/manifests/1", headers={"Accept": OCI_MANIFEST_TYPE}).content
    assert requests.put(f"http://{oci_registry}/v2/cost/a/manifests/draft", data=body,
                        headers={"Content-Type": OCI_MANIFEST_TYPE}).status_code == 201

    listing = OciStore(oci_registry, namespace="cost", insecure=True).list_published()
    assert sorted(listing.versions) == [("a", 1), ("a", 2), ("b", 1)]
    assert listing.rejected == ["cost/a:draft: version 'draft' is not a positive integer"]
    assert listing.requests == 1 + 2 + 3  # catalog, tags of a and b, one manifest per numeric tag

    paged = OciStore(oci_registry, namespace="cost", insecure=True)
    paged.http.page_size = 1  # every repository of the registry on its own catalog page
    paged_listing = paged.list_published()
    assert paged_listing.versions == listing.versions
    assert paged_listing.requests > listing.requests


def test_artifact_is_an_oci_manifest_with_typed_layers_and_annotations(oci_registry, published):
    reference = published["pinned"]
    registry_and_repo, digest = reference.split("@")
    assert registry_and_repo == f"{oci_registry}/llm-release/{MODEL}"
    response = requests.get(f"http://{oci_registry}/v2/llm-release/{MODEL}/manifests/{digest}",
                            headers={"Accept": OCI_MANIFEST_TYPE})
    assert response.status_code == 200
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    doc = response.json()
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert [layer["mediaType"] for layer in doc["layers"]] == [ENGINE_LAYER_TYPE, MANIFEST_LAYER_TYPE]
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in doc["layers"]] == \
        ["engine.tar", "manifest.json"]
    manifest = published["manifest"]
    assert doc["annotations"]["io.llm-release.manifest_digest"] == manifest.digest
    assert doc["annotations"]["io.llm-release.version"] == "1"
    assert digest == _digest_of_tag(oci_registry, f"llm-release/{MODEL}", "1")


def test_download_and_verified_extraction_round_trip(oci_registry, published, tmp_path):
    store = OciStore(oci_registry, insecure=True)
    fetched = store.fetch_manifest(MODEL, 1)
    assert fetched == published["manifest"].to_bytes()
    manifest = Manifest.from_bytes(fetched)
    reports = []
    size = store.download_archive(MODEL, 1, tmp_path / "engine.tar", progress=lambda d, t: reports.append((d, t)))
    assert size == published["archive"].stat().st_size
    assert reports[-1] == (size, size)
    assert (tmp_path / "engine.tar").read_bytes() == published["archive"].read_bytes()
    extract_verified(tmp_path / "engine.tar", tmp_path / "engine", manifest.files)
    assert Manifest.of_engine_dir(tmp_path / "engine") == manifest


def test_identical_republish_is_a_no_op(oci_registry, published, engines):
    store = OciStore(oci_registry, insecure=True)  # a new store, as a retried task would have
    _, archive, manifest = engines["v1"]
    _publish(store, archive, manifest)
    assert store.pinned_reference(MODEL, 1) == published["pinned"]
    assert _digest_of_tag(oci_registry, f"llm-release/{MODEL}", "1") == published["pinned"].split("@")[1]


def test_other_bytes_for_a_published_version_are_refused(oci_registry, published, engines):
    store = OciStore(oci_registry, insecure=True)
    _, archive, manifest = engines["other_v1"]
    assert manifest.to_bytes() != published["manifest"].to_bytes()
    with pytest.raises(ArtifactImmutable, match=rf"{MODEL} version 1 is already published"):
        _publish(store, archive, manifest)
    assert _digest_of_tag(oci_registry, f"llm-release/{MODEL}", "1") == published["pinned"].split("@")[1]
    assert store.fetch_manifest(MODEL, 1) == published["manifest"].to_bytes()


def test_a_tag_that_is_not_a_version_number_is_rejected_with_its_name(oci_registry, published):
    repo = f"llm-release/{MODEL}"
    body = requests.get(f"http://{oci_registry}/v2/{repo}/manifests/1", headers={"Accept": OCI_MANIFEST_TYPE}).content
    pushed = requests.put(f"http://{oci_registry}/v2/{repo}/manifests/v2", data=body,
                          headers={"Content-Type": OCI_MANIFEST_TYPE})
    assert pushed.status_code == 201
    listing = OciStore(oci_registry, insecure=True).list_published()
    assert [r for r in listing.rejected if "'v2'" in r] == [f"{repo}:v2: version 'v2' is not a positive integer"]
    assert (MODEL, 1) in listing.versions


def test_an_archive_without_its_tagged_manifest_is_not_published(oci_registry, published, engines):
    store = OciStore(oci_registry, insecure=True)
    _, archive, manifest = engines["v7"]
    store.upload_archive(MODEL, 7, archive, sha256=sha256_file(archive), properties=manifest.properties)
    assert (MODEL, 7) not in store.list_published().versions
    assert store.fetch_manifest(MODEL, 7) is None
    with pytest.raises(ArtifactNotFound):
        store.download_archive(MODEL, 7, archive.with_suffix(".copy"))
    with pytest.raises(ArtifactNotFound):
        store.pinned_reference(MODEL, 7)


def test_a_manifest_without_an_archive_uploaded_by_the_store_is_refused(oci_registry, engines):
    _, _, manifest = engines["v7"]
    with pytest.raises(ArtifactError, match="call upload_archive before upload_manifest"):
        OciStore(oci_registry, insecure=True).upload_manifest(MODEL, 7, manifest.to_bytes(),
                                                              properties=manifest.properties)


def test_an_unreachable_registry_is_retried_then_named_in_the_error():
    store = OciStore(f"127.0.0.1:{free_port()}", insecure=True, username="alice", password="s3cret-pw")
    store.http.backoff_s = 0.01
    with pytest.raises(ArtifactError, match=rf"llm-release/{MODEL}: reading manifest 1 failed after 4 attempt") as err:
        store.fetch_manifest(MODEL, 1)
    assert "s3cret-pw" not in str(err.value)


def test_a_registry_that_refuses_us_raises_an_auth_error(tmp_path):
    # The registry's "silly" auth challenges every request without credentials with a Bearer
    # realm; the realm here answers nothing, so no token can be had.
    auth = {"silly": {"realm": f"http://127.0.0.1:{free_port()}/token", "service": "llm-release-tests"}}
    with running_registry(tmp_path / "registry", auth=auth) as address:
        store = OciStore(address, insecure=True)
        with pytest.raises(ArtifactAuthError, match=r"HTTP 401"):
            store.list_published()
        with pytest.raises(ArtifactAuthError, match=rf"llm-release/{MODEL}"):
            store.fetch_manifest(MODEL, 1)


def test_a_layer_whose_bytes_differ_from_its_descriptor_is_refused(oci_registry, published, tmp_path):
    """A manifest whose engine layer states the wrong size: the download must not pass."""
    repo = "llm-release/damaged"
    doc = requests.get(f"http://{oci_registry}/v2/llm-release/{MODEL}/manifests/1",
                       headers={"Accept": OCI_MANIFEST_TYPE}).json()
    store = OciStore(oci_registry, insecure=True)
    _publish_as(store, "damaged", 1, published["archive"], published["manifest"])
    doc["layers"][0]["size"] += 1
    body = json.dumps(doc).encode()
    pushed = requests.put(f"http://{oci_registry}/v2/{repo}/manifests/2", data=body,
                          headers={"Content-Type": OCI_MANIFEST_TYPE})
    assert pushed.status_code == 201, pushed.text  # docker-registry does not check descriptor sizes
    with pytest.raises(ChecksumMismatch, match="arrived as"):
        store.download_archive("damaged", 2, tmp_path / "engine.tar")
    assert not (tmp_path / "engine.tar").exists()
