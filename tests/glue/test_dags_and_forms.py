"""What a person meets in the UI and the docs: DAG parameters titled, described and documented,
scheduled DAGs paused at creation, every task under the retry rule, and connection forms that
name their types and describe every field the hooks read."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def doc_section(dag_id: str) -> str:
    text = (REPO / "docs" / "airflow.md").read_text()
    match = re.search(rf"^### `{dag_id}`.*?(?=^### |^## |\Z)", text, re.S | re.M)
    assert match, f"docs/airflow.md has no section for {dag_id}"
    return match.group(0)


def test_every_dag_parameter_has_a_title_and_a_description_and_is_documented(dags):
    assert {"triton_load_probe", "artifact_sync"} <= set(dags)
    for dag_id, dag in dags.items():
        section = doc_section(dag_id)
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.schema.get("title") and len(param.description or "") > 10, (dag_id, name)
            assert f"| `{name}` |" in section, f"docs/airflow.md does not list {dag_id}'s param {name}"
        documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
        assert documented == set(dag.params), (dag_id, documented)


def test_scheduled_dags_wait_for_a_person_and_manual_ones_are_usable_at_once(dags):
    for dag in dags.values():
        scheduled = dag.timetable.can_be_scheduled
        assert dag.is_paused_upon_creation is scheduled, dag.dag_id


def test_every_task_fails_now_on_permanent_errors_and_retries_transient_ones(dags):
    from llm_release_airflow.retry_policy import ReleaseOperator

    for dag in dags.values():
        for task in dag.tasks:
            operator = getattr(task, "operator_class", type(task))
            callable_ = getattr(task, "python_callable", None) or (task.partial_kwargs.get("python_callable")
                                                                  if hasattr(task, "partial_kwargs") else None)
            under_rule = (isinstance(operator, type) and issubclass(operator, ReleaseOperator)) or \
                getattr(callable_, "_llm_release_fail_fast", False)
            assert under_rule, f"{dag.dag_id}.{task.task_id} is not under the retry rule"


def provider_connection_types():
    from llm_release_airflow.provider_info import get_provider_info

    return get_provider_info()["connection-types"]


@pytest.mark.parametrize("conn_type", provider_connection_types(), ids=lambda c: c["connection-type"])
def test_connection_forms_name_the_type_and_describe_every_field(conn_type):
    import importlib

    module, _, name = conn_type["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    assert conn_type["hook-name"] == hook.hook_name and conn_type["connection-type"] == hook.conn_type
    assert conn_type["hook-name"] != conn_type["connection-type"]  # listed by a name, not a raw id
    for field, spec in conn_type.get("conn-fields", {}).items():
        assert spec["label"] and len(spec["description"]) > 15, field
        types = spec["schema"]["type"]
        assert isinstance(types, list) and "null" in types, f"{field} would be required: the form shows it in error"
    relabeled = conn_type["ui-field-behaviour"].get("relabeling", {})
    hidden = conn_type["ui-field-behaviour"].get("hidden-fields", [])
    assert "schema" in hidden or relabeled.get("schema", "").startswith("Scheme")  # not Airflow's "Schema"


def extra_keys_read_by(path: Path) -> set[str]:
    """Every key a hook reads from its connection's extras: extra["k"] and extra.get("k")."""
    keys = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "extra" \
                and isinstance(node.slice, ast.Constant):
            keys.add(node.slice.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and getattr(node.func.value, "id", None) == "extra" and node.args \
                and isinstance(node.args[0], ast.Constant):
            keys.add(node.args[0].value)
    return keys


@pytest.mark.parametrize("conn_type, hook_file", [("llm_gateway", "gateway.py"), ("triton", "triton.py"),
                                                  ("artifactory", "artifactory.py"), ("oci_registry", "oci_registry.py")])
def test_every_extra_a_hook_reads_has_a_field_in_the_form(conn_type, hook_file):
    (spec,) = [c for c in provider_connection_types() if c["connection-type"] == conn_type]
    read = extra_keys_read_by(REPO / "hooks" / hook_file) - {"host"}  # `host`: the older name of service_host
    assert read and read <= set(spec["conn-fields"]), sorted(read - set(spec["conn-fields"]))
