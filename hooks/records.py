"""RecordsHook: the release records database from an Airflow connection (PostgreSQL in
production), or the default SQLite file when the connection is not defined."""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import BaseHook

RECORDS_CONN_ID = "llm_release_records"


def records_url(conn_id: str = RECORDS_CONN_ID, *, log=None) -> str:
    """postgres/postgresql connections -> postgresql+psycopg://...; sqlite -> its file; none
    defined -> $LLM_RELEASE_RECORDS_URL, else $AIRFLOW_HOME/llm-release/releases.db."""
    from airflow.exceptions import AirflowNotFoundException

    from llm_release.records import ReleaseRecords

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if os.environ.get("LLM_RELEASE_RECORDS_URL"):
            return os.environ["LLM_RELEASE_RECORDS_URL"]
        home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
        path = home / "llm-release" / "releases.db"
        if log:
            log.info("no connection %s: release records in %s", conn_id, path)
        return ReleaseRecords.sqlite_url(path)
    if conn.conn_type == "sqlite":
        return ReleaseRecords.sqlite_url(conn.host)
    from sqlalchemy.engine import URL

    return URL.create("postgresql+psycopg", username=conn.login, password=conn.password, host=conn.host,
                      port=conn.port, database=conn.schema or "postgres").render_as_string(hide_password=False)
