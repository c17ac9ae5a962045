"""OciRegistryHook: an Airflow connection of type `oci_registry` -> llm_release's OciStore."""

from __future__ import annotations

from airflow.sdk import BaseHook

from llm_release_airflow.hooks._connection import extras


class OciRegistryHook(BaseHook):
    """An OCI registry holding engines as OCI artifacts ("model images" pinned by digest).

    Connection fields: host (and port) = the registry address, login/password for basic or
    token auth; extras `namespace` (default "llm-release") and `insecure` (plain HTTP).
    """

    conn_name_attr = "oci_conn_id"
    default_conn_name = "oci_registry_default"
    conn_type = "oci_registry"
    hook_name = "OCI registry (engines)"  # as in provider_info (what the connection form lists)

    def __init__(self, oci_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.oci_conn_id = oci_conn_id

    def get_store(self, namespace: str | None = None):
        from llm_release.artifacts.stores.oci import OciStore
        from llm_release.errors import SpecError

        conn = self.get_connection(self.oci_conn_id)
        if not conn.host:
            raise SpecError(f"connection {self.oci_conn_id}: host", "is empty", "set it to the registry address")
        extra = extras(conn)
        registry = f"{conn.host}:{conn.port}" if conn.port else conn.host
        return OciStore(registry, namespace=namespace or extra.get("namespace") or "llm-release",
                        insecure=str(extra.get("insecure", "false")).lower() in ("true", "1", "yes"),
                        username=conn.login or None, password=conn.password or None)

    def get_conn(self):
        return self.get_store()
