"""Published engine artifacts: packaging, stores (S3, Artifactory, OCI), publish and sync."""
