"""Run inside an isolated AIRFLOW_HOME (set by the caller): parse the dags/ folder or dag.test() one DAG.

Prints one JSON line with the outcome so the test process never imports Airflow itself.
"""

from __future__ import annotations

import json
import sys
import time


EXTRA_XCOM_KEYS = ("canary_verdict",)


def parse(dags_folder: str) -> dict:
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=dags_folder)
    return {"dag_ids": sorted(bag.dag_ids), "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
            "seconds": time.perf_counter() - started,
            # Parsing must not pull in the core's clients: they are imported inside execute().
            "core_modules_loaded": sorted(m for m in sys.modules if m == "llm_release" or m.startswith("llm_release."))}


def run(dags_folder: str, dag_id: str, conf: dict) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=dags_folder).get_dag(dag_id)
    try:
        dr = dag.test(run_conf=conf)
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        return {"error": type(exc).__name__, "message": str(exc)}
    tis = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    xcoms = {}
    for ti in dr.get_task_instances():
        value = ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index) if ti.map_index >= 0 \
            else ti.xcom_pull(task_ids=ti.task_id)
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        xcoms[key] = value
        for extra in EXTRA_XCOM_KEYS:  # pushed by a task that then failed on purpose (a verdict)
            pushed = ti.xcom_pull(task_ids=ti.task_id, key=extra)
            if pushed is not None:
                xcoms[f"{key}:{extra}"] = pushed
    return {"state": str(dr.state), "tasks": {k: str(v) for k, v in tis.items()}, "xcoms": xcoms}


def run_operator(classpath: str, kwargs: dict) -> dict:
    """Execute one operator outside a DAG, as a worker would, and return its result."""
    import importlib

    module, _, name = classpath.rpartition(".")
    operator = getattr(importlib.import_module(module), name)(task_id="under_test", **kwargs)
    try:
        return {"result": operator.execute({"run_id": "manual__test"})}
    except Exception as exc:  # noqa: BLE001 - reported to the test as data
        # A permanent error arrives as Airflow's fail-now exception chained to the core's error.
        cause = exc.__cause__
        return {"error": type(exc).__name__, "message": str(exc),
                "cause": type(cause).__name__ if cause is not None else None}


if __name__ == "__main__":
    mode, folder = sys.argv[1], sys.argv[2]
    if mode == "operator":
        out = run_operator(folder, json.loads(sys.argv[3]))
    elif mode == "parse":
        out = parse(folder)
    else:
        out = run(folder, sys.argv[3], json.loads(sys.argv[4]))
    print("RESULT " + json.dumps(out, default=str))
