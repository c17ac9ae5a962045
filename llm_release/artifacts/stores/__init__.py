"""Artifact stores behind one interface: S3, Artifactory, OCI registry."""
