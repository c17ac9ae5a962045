"""Artifact stores from command-line options, with credentials from the environment only.

For use without Airflow (the CLI, an emergency on a laptop): S3 takes the usual AWS
environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, AWS_ENDPOINT_URL, ...); Artifactory reads
ARTIFACTORY_TOKEN, or ARTIFACTORY_USER and ARTIFACTORY_PASSWORD; an OCI registry reads
OCI_USERNAME and OCI_PASSWORD. Secrets never appear on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from llm_release.artifacts.stores.base import ArtifactStore
from llm_release.errors import SpecError


def store_from_options(kind: str, *, bucket: str | None = None, prefix: str = "", url: str | None = None,
                       repo: str | None = None, registry: str | None = None, insecure: bool = False,
                       endpoint_url: str | None = None, env: Mapping[str, str] = os.environ) -> ArtifactStore:
    if kind == "s3":
        if not bucket:
            raise SpecError("--bucket", "is required for an S3 store", "give the bucket that holds the engines")
        import boto3

        from llm_release.artifacts.stores.s3 import S3Store

        client = boto3.client("s3", endpoint_url=endpoint_url or env.get("AWS_ENDPOINT_URL") or None)
        return S3Store(client, bucket, prefix)
    if kind == "artifactory":
        if not url or not repo:
            raise SpecError("--url/--repo", "are required for an Artifactory store",
                            "give the Artifactory URL and the generic repository key")
        from llm_release.artifacts.stores.artifactory import ArtifactoryStore

        if env.get("ARTIFACTORY_USER"):
            credentials = {"username": env["ARTIFACTORY_USER"], "password": env.get("ARTIFACTORY_PASSWORD")}
        else:
            credentials = {"token": env.get("ARTIFACTORY_TOKEN")}
        return ArtifactoryStore(url, repo, prefix=prefix, **credentials)
    if kind == "oci":
        if not registry:
            raise SpecError("--registry", "is required for an OCI store", "give host:port of the registry")
        from llm_release.artifacts.stores.oci import OciStore

        return OciStore(registry, namespace=prefix or "llm-release", insecure=insecure,
                        username=env.get("OCI_USERNAME"), password=env.get("OCI_PASSWORD"))
    raise SpecError("--store", f"{kind!r} is not a known store", "use s3, artifactory or oci")
