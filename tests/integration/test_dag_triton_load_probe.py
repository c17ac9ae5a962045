"""The triton_load_probe DAG, run with dag.test() against the real stack."""

from __future__ import annotations

from tests.airflow.harness import dag_test, parse_dags

MODEL = "reference_lm"


def test_dags_parse_without_errors(airflow_env):
    result = parse_dags(airflow_env)
    assert result["import_errors"] == {}
    assert {"triton_load_probe", "artifact_sync", "release"} <= set(result["dag_ids"])
    # No client is imported while parsing; only the release spec, whose definition makes the
    # release DAG's trigger form (standard library only), is.
    assert set(result["core_modules_loaded"]) <= {"llm_release", "llm_release.errors", "llm_release.release",
                                                  "llm_release.release.spec", "llm_release.routing",
                                                  "llm_release.routing.state"}


def test_load_probe_dag_loads_a_version_beside_the_serving_one(airflow_env, triton, engines):
    from llm_release.model_repo import install_version

    triton.load_versions(MODEL, [1])
    install_version(engines["dir"] / "engine3", triton.model_repository, model_name=MODEL, version=3)
    result = dag_test(airflow_env, "triton_load_probe", {"model": MODEL, "version": 3})
    assert result.get("state") == "success", result
    assert result["tasks"] == {"load_version": "success", "probe_version": "success"}
    assert triton.ready_versions(MODEL) == [1, 3]  # v1 kept serving, v3 added
    triton.load_versions(MODEL, [1, 2])  # restore what the other tests expect


def test_invalid_params_are_refused_before_any_task_runs(airflow_env, triton):
    before = triton.ready_versions(MODEL)
    result = dag_test(airflow_env, "triton_load_probe", {"model": MODEL, "version": 0})
    assert result.get("error") == "ParamValidationError", result
    assert "version" in result["message"]
    assert triton.ready_versions(MODEL) == before
