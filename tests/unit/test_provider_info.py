"""Airflow discovers our connection types through the provider entry point: keep it consistent."""

import json
import subprocess
import sys

CHECK = """
import importlib, json
from importlib.metadata import entry_points
(ep,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("llm_release_airflow")]
info = ep.load()()
out = []
for ct in info["connection-types"]:
    module, _, name = ct["hook-class-name"].rpartition(".")
    hook = getattr(importlib.import_module(module), name)
    out.append([ct["connection-type"], hook.conn_type, hook.default_conn_name, hook.conn_name_attr])
(plugin_ep,) = [e for e in entry_points(group="airflow.plugins") if e.name == "llm_release"]
out.append(["plugin", plugin_ep.load().name])
print(json.dumps(out))
"""


def test_every_connection_type_names_a_hook_with_the_same_conn_type(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert ["plugin", "llm_release"] in rows
    hooks = [r for r in rows if r[0] != "plugin"]
    assert {r[0] for r in hooks} == {"triton", "llm_gateway", "prometheus", "artifactory", "oci_registry"}
    for declared, actual, default_conn, attr in hooks:
        assert declared == actual
        assert default_conn.endswith("_default") and attr.endswith("_conn_id")
