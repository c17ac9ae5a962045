"""Model repository installs: atomic, verified, immutable versions with fresh mtimes."""

import os
import time

import pytest

from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import make_reference_checkpoint
from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.metadata import read_metadata, verify_engine
from llm_release.model_repo import install_version, installed_versions, metadata_of

PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 96}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Engines: v1 and v2 of seed 1, v1 of seed 2 (other content), v1 rebuilt later."""
    root = tmp_path_factory.mktemp("built")
    seed1 = make_reference_checkpoint(root / "ck1", seed=1)
    seed2 = make_reference_checkpoint(root / "ck2", seed=2)

    def build(checkpoint, name, version, created_at="2026-01-31T12:00:00Z", **changes):
        build_engine(checkpoint, root / name, {**PARAMS, **changes}, model_name="reference_lm",
                     version=version, created_at=created_at)
        return root / name

    return {"v1": build(seed1, "v1", 1), "v2": build(seed1, "v2", 2, max_batch_size=8),
            "other_v1": build(seed2, "other_v1", 1),
            "v1_later": build(seed1, "v1_later", 1, created_at="2026-02-01T00:00:00Z")}


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_install_layout(tmp_path, built):
    path = install_version(built["v1"], tmp_path)
    assert path == tmp_path / "reference_lm" / "1"
    assert sorted(os.listdir(tmp_path / "reference_lm")) == ["1", "config.pbtxt"]
    assert sorted(os.listdir(path)) == ["engine", "metadata.json", "model.py",
                                        "triton_config.json"]
    assert sorted(os.listdir(path / "engine")) == ["config.json", "runtime.py", "weights.npz"]
    assert verify_engine(path) == read_metadata(built["v1"])
    assert installed_versions(tmp_path, "reference_lm") == [1]
    assert metadata_of(tmp_path, "reference_lm", 1) == read_metadata(built["v1"])


def test_config_pbtxt_is_named_for_the_model_and_has_no_version_policy(tmp_path, built):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    install_version(built["v1"], tmp_path, model_name="canary_lm", version=7)
    text = (tmp_path / "canary_lm" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.name == "canary_lm"
    assert config.model_transaction_policy.decoupled
    assert not config.HasField("version_policy")
    assert installed_versions(tmp_path, "canary_lm") == [7]


def test_config_follows_the_newest_version(tmp_path, built):
    install_version(built["v2"], tmp_path)
    assert "max_batch_size: 8\n" in (tmp_path / "reference_lm" / "config.pbtxt").read_text()
    install_version(built["v1"], tmp_path)
    assert "max_batch_size: 8\n" in (tmp_path / "reference_lm" / "config.pbtxt").read_text()
    assert installed_versions(tmp_path, "reference_lm") == [1, 2]


def test_identical_install_is_a_no_op(tmp_path, built):
    install_version(built["v1"], tmp_path)
    before, mtimes = _snapshot(tmp_path), _mtimes(tmp_path)
    install_version(built["v1"], tmp_path)
    install_version(built["v1_later"], tmp_path)  # same engine bytes, built at another time
    assert _snapshot(tmp_path) == before
    assert _mtimes(tmp_path) == mtimes


def test_other_content_at_an_installed_version_is_refused(tmp_path, built):
    install_version(built["v1"], tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(SpecError) as err:
        install_version(built["other_v1"], tmp_path)
    assert err.value.field == "version"
    assert "already installed with other content" in str(err.value)
    assert err.value.fix == "publish a new version"
    assert _snapshot(tmp_path) == before


def test_damaged_installed_version_is_not_overwritten(tmp_path, built):
    path = install_version(built["v1"], tmp_path)
    (path / "model.py").write_text("# edited by hand\n")
    with pytest.raises(SpecError, match="not intact"):
        install_version(built["v1"], tmp_path)
    assert (path / "model.py").read_text() == "# edited by hand\n"


def test_bytecode_written_by_triton_does_not_change_identity(tmp_path, built):
    path = install_version(built["v1"], tmp_path)
    (path / "__pycache__").mkdir()
    (path / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    assert install_version(built["v1"], tmp_path) == path


def test_tampered_engine_is_not_installed(tmp_path, built):
    engine = tmp_path / "engine"
    engine.mkdir()
    for source in built["v1"].rglob("*"):
        dest = engine / source.relative_to(built["v1"])
        dest.mkdir() if source.is_dir() else dest.write_bytes(source.read_bytes())
    (engine / "engine" / "config.json").write_text("{}")
    with pytest.raises(ChecksumMismatch, match="engine/config.json"):
        install_version(engine, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_installed_files_get_fresh_mtimes(tmp_path, built):
    old = time.time() - 10 * 24 * 3600
    source = tmp_path / "old"
    for path in built["v1"].rglob("*"):
        dest = source / path.relative_to(built["v1"])
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            dest.write_bytes(path.read_bytes())
    for path in source.rglob("*"):
        os.utime(path, (old, old))
    started = time.time() - 5
    installed = install_version(source, tmp_path / "repo")
    assert all(p.stat().st_mtime > started for p in [installed, *installed.rglob("*")])


def test_no_temp_dirs_left_and_crash_leftovers_removed(tmp_path, built):
    model_dir = tmp_path / "reference_lm"
    (model_dir / ".tmp-1-deadbeef" / "engine").mkdir(parents=True)
    (model_dir / ".tmp-1-deadbeef" / "model.py").write_text("half")
    (model_dir / ".config.pbtxt.tmp-x1y2").write_text("half")
    install_version(built["v1"], tmp_path)
    install_version(built["v2"], tmp_path)
    assert sorted(os.listdir(model_dir)) == ["1", "2", "config.pbtxt"]


@pytest.mark.parametrize("kwargs, field", [({"model_name": "bad/name"}, "model_name"),
                                           ({"version": 0}, "version"),
                                           ({"version": True}, "version")])
def test_bad_names_refused_before_writing(tmp_path, built, kwargs, field):
    with pytest.raises(SpecError) as err:
        install_version(built["v1"], tmp_path / "repo", **kwargs)
    assert err.value.field == field
    assert not (tmp_path / "repo").exists()


def test_queries_on_missing_things(tmp_path):
    assert installed_versions(tmp_path, "nothing") == []
    with pytest.raises(SpecError) as err:
        metadata_of(tmp_path, "nothing", 1)
    assert err.value.field == "version"
