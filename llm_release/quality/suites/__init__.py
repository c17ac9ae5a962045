"""Golden suites shipped with the package, one YAML file per model (see llm_release.quality.golden)."""
