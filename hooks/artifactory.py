"""ArtifactoryHook: an Airflow connection of type `artifactory` -> llm_release's ArtifactoryStore."""

from __future__ import annotations

from airflow.sdk import BaseHook

from llm_release_airflow.hooks._connection import extras


class ArtifactoryHook(BaseHook):
    """Where published engines live in JFrog Artifactory: one generic repository, an optional prefix.

    Connection fields: host = the Artifactory URL (`https://artifactory.example.com/artifactory`;
    https is assumed when no scheme is given), password = an access token, or login + password
    for basic authentication; extras `repo` (required) and `prefix`.
    """

    conn_name_attr = "artifactory_conn_id"
    default_conn_name = "artifactory_default"
    conn_type = "artifactory"
    hook_name = "JFrog Artifactory (engines)"  # as in provider_info (what the connection form lists)

    def __init__(self, artifactory_conn_id: str = default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.artifactory_conn_id = artifactory_conn_id

    def get_store(self, prefix: str | None = None):
        """The core store for this connection; `prefix` overrides the connection's extra.

        The core is imported here, so DAG parsing does not pay for it.
        """
        from llm_release.artifacts.stores.artifactory import ArtifactoryStore
        from llm_release.errors import SpecError

        conn = self.get_connection(self.artifactory_conn_id)
        extra = extras(conn)
        if not extra.get("repo"):
            raise SpecError(f"connection {self.artifactory_conn_id}: extra 'repo'", "is missing",
                            "set it to the key of the generic repository that holds the engines")
        if not conn.host:
            raise SpecError(f"connection {self.artifactory_conn_id}: host", "is empty",
                            "set it to the Artifactory URL, e.g. https://artifactory.example.com/artifactory")
        url = conn.host if "://" in conn.host else f"https://{conn.host}"
        credentials = ({"username": conn.login, "password": conn.password} if conn.login
                       else {"token": conn.password or None})
        return ArtifactoryStore(url, extra["repo"], prefix=(extra.get("prefix") or "") if prefix is None else prefix,
                                **credentials)

    def get_conn(self):
        return self.get_store()
