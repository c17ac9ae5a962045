"""Permanent or transient: the one rule every operator and the CLI use to decide about retries."""

import pytest
import requests
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from kubernetes.client.exceptions import ApiException

from llm_release.errors import (
    ArtifactAuthError,
    ArtifactError,
    ArtifactImmutable,
    ArtifactNotFound,
    MetricsError,
    ModelNotFound,
    RoutingError,
    SpecError,
    TritonError,
    is_permanent,
)
from llm_release.triton_control import TritonControl


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("exc", [
    SpecError("version", "0 is not a positive integer"),
    ModelNotFound("llama: no version directory for [3]"),
    ArtifactImmutable("published with other bytes"),
    ArtifactNotFound("no manifest"),
    ArtifactAuthError("403"),
    TritonError("no config and no repository index entry", permanent=True),
    http_error(400), http_error(401), http_error(404), http_error(422),
    client_error(403, "AccessDenied"), client_error(404, "NoSuchBucket"),
    NoCredentialsError(),
    ApiException(status=403, reason="Forbidden"),
    requests.exceptions.MissingSchema("no scheme"),
], ids=lambda e: type(e).__name__)
def test_errors_no_retry_can_fix_are_permanent(exc):
    assert is_permanent(exc)


@pytest.mark.parametrize("exc", [
    TritonError("Triton at http://triton:8000 unreachable"),
    RoutingError("Envoy did not apply the new routes within 10 s"),
    MetricsError("Prometheus unreachable"),
    ArtifactError("GET failed after 4 attempts; Artifactory is unavailable"),
    http_error(500), http_error(502), http_error(503), http_error(408), http_error(409), http_error(429),
    client_error(500, "InternalError"), client_error(503, "SlowDown"),
    EndpointConnectionError(endpoint_url="http://s3:9000"),
    requests.ConnectionError("connection refused"), requests.Timeout("read timed out"),
    ApiException(status=503, reason="Service Unavailable"),
    TimeoutError(), OSError("disk hiccup"), RuntimeError("anything we do not know"),
], ids=lambda e: type(e).__name__)
def test_errors_a_later_try_may_pass_are_transient(exc):
    assert not is_permanent(exc)


def test_a_raise_site_can_override_its_class_default():
    assert not RoutingError("Envoy admin unreachable").permanent
    assert RoutingError("Kubernetes API refused (403)", permanent=True).permanent
    assert not ModelNotFound("x", permanent=False).permanent


def test_a_version_that_is_not_installed_is_refused_before_triton_is_asked(tmp_path):
    (tmp_path / "llama" / "1").mkdir(parents=True)
    # Nothing listens on port 9: a request would raise a transient TritonError instead.
    triton = TritonControl("http://127.0.0.1:9", model_repository=str(tmp_path))
    with pytest.raises(ModelNotFound, match=r"no version directory for \[3\]") as caught:
        triton.load_versions("llama", [1, 3])
    assert is_permanent(caught.value)


def test_an_unreachable_triton_is_transient():
    with pytest.raises(TritonError) as caught:
        TritonControl("http://127.0.0.1:9").repository_index()
    assert not is_permanent(caught.value)
