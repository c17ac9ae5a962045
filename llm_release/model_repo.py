"""Installing engines as versions of a Triton model repository, never half-written.

Layout: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/<version>/` holding the engine
directory as built (model.py, engine/, metadata.json, triton_config.json). A version is copied
into `<model>/.tmp-<version>-<random>` (not numeric, so Triton ignores it), fsynced, verified,
then renamed to `<version>`: Triton sees the whole version or none of it. Files get fresh
mtimes, because Triton detects changed model files by mtime. Installs into one model are
serialized with an flock on the model directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.fsutil import fsync_dir, write_atomically
from llm_release.metadata import (METADATA_FILE, EngineMetadata, check_model_name,
                                  check_version, engine_files, read_metadata,
                                  verify_engine)
from llm_release.triton_config import to_pbtxt

LOG = logging.getLogger("llm_release.model_repo")
CONFIG_FILE = "config.pbtxt"
TRITON_CONFIG_FILE = "triton_config.json"
_TMP_PREFIXES = (".tmp-", f".{CONFIG_FILE}.tmp-")


def install_version(engine_dir, repo_root, *, model_name: str | None = None,
                    version: int | None = None) -> Path:
    """Install a verified engine as `<repo_root>/<model>/<version>` and return that path.

    model_name and version default to the engine's metadata. Installing identical content
    again is a no-op; other content under an installed version is refused (SpecError on
    "version"). config.pbtxt follows the newest installed version.
    """
    meta = verify_engine(engine_dir)
    model = check_model_name(meta.model if model_name is None else model_name)
    version = check_version(meta.version if version is None else version)

    def copy_into(tmp: Path) -> None:
        for rel in engine_files(engine_dir) + [METADATA_FILE]:
            _copy_file(Path(engine_dir) / rel, tmp / rel)

    return install_staged(repo_root, model, version, copy_into, expected=meta)


def install_staged(repo_root, model: str, version: int, stage: Callable[[Path], None], *,
                   expected: EngineMetadata | None = None) -> Path:
    """Install a version whose files `stage(tmp_dir)` writes (copy, download + extract, ...).

    Under the model's lock: leftovers of crashed installs are removed, an existing version is
    kept if identical (and refused otherwise), the staged tree is fsynced and verified against
    its metadata.json, config.pbtxt follows the newest version, and one rename makes the
    version visible. Whatever fails, Triton never sees a partial version.
    """
    model = check_model_name(model)
    version = check_version(version)
    model_dir = Path(repo_root) / model
    model_dir.mkdir(parents=True, exist_ok=True)
    with _locked(model_dir):
        _remove_leftovers(model_dir)
        target = model_dir / str(version)
        if target.exists() and expected is not None:
            _require_same(target, expected, model, version)
            LOG.info("%s version %d is already installed with this engine; nothing to do",
                     model, version)
            return target
        if target.exists():
            raise SpecError("version", f"{model} version {version} is already installed",
                            "remove it first or publish a new version")
        tmp = model_dir / f".tmp-{version}-{secrets.token_hex(6)}"
        try:
            tmp.mkdir()
            stage(tmp)
            for directory in sorted({(tmp / rel).parent for rel in engine_files(tmp)} | {tmp}):
                fsync_dir(directory)
            meta = verify_engine(tmp)
            if expected is not None and not meta.same_build(expected):
                raise ChecksumMismatch(f"{model} v{version}: staged files differ from the expected engine")
            newest = all(version > v for v in installed_versions(repo_root, model))
            if newest or not (model_dir / CONFIG_FILE).exists():
                write_atomically(model_dir / CONFIG_FILE, _config_pbtxt(tmp, model).encode("utf-8"))
            os.rename(tmp, target)
            fsync_dir(model_dir)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    LOG.info("installed %s version %d at %s", model, version, target)
    return target


def remove_version(repo_root, model: str, version: int) -> None:
    """Take a version out of the repository atomically (rename to a temp name, then delete).

    The caller has made sure Triton does not serve it: removal never unloads anything.
    """
    model_dir = Path(repo_root) / check_model_name(model)
    target = model_dir / str(check_version(version))
    with _locked(model_dir):
        if not target.exists():
            return
        doomed = model_dir / f".tmp-removed-{version}-{secrets.token_hex(6)}"
        os.rename(target, doomed)
        fsync_dir(model_dir)
        shutil.rmtree(doomed)
    LOG.info("removed %s version %d from %s", model, version, model_dir)


def installed_versions(repo_root, model: str) -> list[int]:
    """Version numbers present under the model, sorted (only Triton-valid version dirs)."""
    model_dir = Path(repo_root) / check_model_name(model)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def metadata_of(repo_root, model: str, version: int) -> EngineMetadata:
    """The metadata of an installed version."""
    path = Path(repo_root) / check_model_name(model) / str(check_version(version))
    if not path.is_dir():
        raise SpecError("version", f"{model} version {version} is not installed in {repo_root}",
                        "install it first")
    return read_metadata(path)


def _config_pbtxt(engine_dir: Path, model: str) -> str:
    """config.pbtxt from the engine's triton_config.json, named for the model directory and
    without version_policy: the loader passes the versions it wants with each load."""
    try:
        config = json.loads((engine_dir / TRITON_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError("engine_dir", f"cannot read {engine_dir / TRITON_CONFIG_FILE}: {exc}",
                        "rebuild the engine") from exc
    config["name"] = model
    config.pop("version_policy", None)
    return to_pbtxt(config)


@contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    fd = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(model_dir: Path) -> None:
    """Temp dirs and files of installs that crashed (we hold the lock: none is in flight)."""
    for entry in model_dir.iterdir():
        if entry.name.startswith(_TMP_PREFIXES):
            LOG.warning("removing leftover %s from an interrupted install", entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _require_same(target: Path, meta: EngineMetadata, model: str, version: int) -> None:
    """An installed version may only be 'reinstalled' with the same engine bytes."""
    try:
        installed = verify_engine(target)
    except (SpecError, ChecksumMismatch) as exc:
        installed, reason = None, f"the installed copy is not intact: {exc}"
    else:
        reason = "different engine files"
    if installed is None or not installed.same_build(meta):
        raise SpecError("version", f"{model} version {version} is already installed with "
                        f"other content ({reason})", "publish a new version")


def _copy_file(source: Path, dest: Path) -> None:
    """Copy bytes only (fresh mtime, default mode) and fsync."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
