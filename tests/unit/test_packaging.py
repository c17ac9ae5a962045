"""A non-editable install (the Airflow image) must carry every module and data file of the core."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_core_directory_is_a_declared_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    found = {
        ".".join(path.relative_to(ROOT).parts)
        for path in [ROOT / "llm_release", *(ROOT / "llm_release").rglob("*")]
        if path.is_dir() and path.name != "__pycache__" and (any(path.glob("*.py")) or any(path.glob("*.txt")))
    }
    assert "llm_release.routing" in found
    assert found - declared == set()
