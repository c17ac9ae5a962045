"""Build the core's artifact store for a source spec from Airflow connections.

s3 goes through the amazon provider's S3Hook (its credentials, region and endpoint), artifactory
through ArtifactoryHook, oci through OciRegistryHook.
"""

from __future__ import annotations


def store_for_source(source):
    """`source` is a llm_release.artifacts.targets.SourceSpec (or its dict form)."""
    from llm_release.artifacts.targets import SourceSpec, parse_source

    spec = source if isinstance(source, SourceSpec) else parse_source(source, "source")
    if spec.kind == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from llm_release.artifacts.stores.s3 import S3Store

        return S3Store(S3Hook(aws_conn_id=spec.conn_id).get_conn(), spec.bucket, spec.prefix)
    if spec.kind == "artifactory":
        from llm_release_airflow.hooks.artifactory import ArtifactoryHook

        return ArtifactoryHook(artifactory_conn_id=spec.conn_id).get_store(prefix=spec.prefix or None)
    from llm_release_airflow.hooks.oci_registry import OciRegistryHook

    return OciRegistryHook(oci_conn_id=spec.conn_id).get_store(namespace=spec.prefix or None)
