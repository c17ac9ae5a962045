"""Shared helpers: turn an Airflow connection into a base URL and its extras."""

from __future__ import annotations


def base_url(conn, default_port: int) -> str:
    scheme = conn.schema or "http"
    host = conn.host or "localhost"
    if "://" in host:  # a full URL in the host field
        return host.rstrip("/")
    return f"{scheme}://{host}:{conn.port or default_port}"


def extras(conn) -> dict:
    return dict(conn.extra_dejson or {})
