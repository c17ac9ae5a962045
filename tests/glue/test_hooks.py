"""Connection fields -> the core objects each hook builds; bad connections name the field to fix."""

from __future__ import annotations

import pytest

from llm_release.errors import SpecError


def test_envoy_gateway_connection_builds_the_router_it_describes(connection, tmp_path):
    from llm_release.routing.envoy import EnvoyRouter
    from llm_release_airflow.hooks.gateway import GatewayHook

    connection("gw", conn_type="llm_gateway", host="gw.example", port=10000, extra={
        "router": "envoy", "admin_url": "http://envoy-admin:9901/", "control_plane_url": "http://xds.local:18090",
        "upstream_host": "triton.serving.svc", "upstream_port": "8000",  # the form may store numbers as text
        "shadow_port": 10001, "topology": "deployment_per_version",
        "backends": '{"1": ["triton-v1", 8000], "2": ["triton-v2", "8001"]}'})
    hook = GatewayHook(gateway_conn_id="gw")
    router = hook.get_conn()
    assert isinstance(router, EnvoyRouter)
    assert router.admin_url == "http://envoy-admin:9901"
    assert router.control_plane_url == "http://xds.local:18090"
    assert router.upstream == ("triton.serving.svc", 8000)
    assert router.shadow_listener == ("127.0.0.1", 10001)
    assert router.topology == "deployment_per_version"
    assert router.backends == {1: ("triton-v1", 8000), 2: ("triton-v2", 8001)}
    assert hook.url == "http://gw.example:10000"


def test_envoy_gateway_without_shadow_port_has_no_shadow_listener(connection, tmp_path):
    from llm_release_airflow.hooks.gateway import GatewayHook

    connection("gw", conn_type="llm_gateway", host="gw", extra={
        "admin_url": "http://a:9901", "control_plane_url": "http://xds.local:18090", "upstream_port": 8000, "shadow_port": None,
        "router": None, "topology": None})  # fields left empty in the form arrive as null
    router = GatewayHook(gateway_conn_id="gw").get_conn()
    assert router.shadow_listener is None and router.topology == "versions"


@pytest.mark.parametrize("extra, field, fix", [
    ({"admin_url": "http://a:9901", "upstream_port": 8000}, "control_plane_url", "envoy router needs"),
    ({"admin_url": "http://a:9901", "control_plane_url": "http://x:18090", "upstream_port": "eighty"}, "upstream_port", "between 1 and 65535"),
    ({"admin_url": "http://a:9901", "control_plane_url": "http://x:18090", "upstream_port": 8000, "backends": "{1: x}"}, "backends", "JSON"),
    ({"admin_url": "http://a:9901", "control_plane_url": "http://x:18090", "upstream_port": 8000, "backends": {"1": "triton"}},
     "backends", "host"),
    ({"router": "nginx"}, "router", "envoy, istio or gatewayapi"),
    ({"router": "istio", "namespace": "serving"}, "virtual_service, service_host", "istio router needs"),
])
def test_a_gateway_connection_missing_or_garbling_a_field_names_it(connection, extra, field, fix):
    from llm_release_airflow.hooks.gateway import GatewayHook

    connection("gw", conn_type="llm_gateway", host="gw", extra=extra)
    with pytest.raises(SpecError) as caught:
        GatewayHook(gateway_conn_id="gw").get_conn()
    message = str(caught.value)
    assert "connection gw" in message and field in message and fix in message


def test_istio_connection_reads_service_host_and_the_older_host_extra(connection, kubeconfig):
    from llm_release.routing.istio import IstioRouter
    from llm_release_airflow.hooks.gateway import GatewayHook

    base = {"router": "istio", "namespace": "serving", "virtual_service": "llm", "kubeconfig": kubeconfig}
    connection("new", conn_type="llm_gateway", extra=dict(base, service_host="triton.serving.svc"))
    connection("old", conn_type="llm_gateway", extra=dict(base, host="triton-old.serving.svc"))
    new, old = GatewayHook(gateway_conn_id="new").get_conn(), GatewayHook(gateway_conn_id="old").get_conn()
    assert isinstance(new, IstioRouter) and new.host == "triton.serving.svc" and new.namespace == "serving"
    assert old.host == "triton-old.serving.svc"
    assert new._destination_rule.name == "llm"  # named like the VirtualService unless given


def test_gateway_api_connection_with_a_shared_triton_service(connection, kubeconfig):
    from llm_release.routing.gatewayapi import GatewayApiRouter
    from llm_release_airflow.hooks.gateway import GatewayHook

    connection("gw", conn_type="llm_gateway", extra={
        "router": "gatewayapi", "namespace": "serving", "http_route": "llm", "kubeconfig": kubeconfig,
        "topology": "versions", "shared_service": "triton", "service_template": None})
    router = GatewayHook(gateway_conn_id="gw").get_conn()
    assert isinstance(router, GatewayApiRouter)
    assert router.shared_service == "triton" and router.topology == "versions"
    assert router.services.render("llama", 3) == "llama-v3"


def test_triton_connection_gives_a_client_with_a_long_timeout_and_the_repository(connection):
    from llm_release_airflow.hooks.triton import TritonHook

    connection("t", conn_type="triton", host="triton.serving.svc", port=8000, schema="https",
               extra={"model_repository": "/models", "network_timeout": 900})
    client = TritonHook(triton_conn_id="t").get_conn()
    assert client.base_url == "https://triton.serving.svc:8000"
    assert client.timeout_s == 900 and str(client.model_repository) == "/models"
    connection("u", conn_type="triton", host="http://triton:8000/")
    bare = TritonHook(triton_conn_id="u").get_conn()
    assert bare.base_url == "http://triton:8000" and bare.timeout_s == 600 and bare.model_repository is None


def test_prometheus_connection(connection):
    from llm_release_airflow.hooks.prometheus import PrometheusHook

    connection("p", conn_type="prometheus", host="prometheus.monitoring.svc")
    assert PrometheusHook(prometheus_conn_id="p").get_conn().base_url == "http://prometheus.monitoring.svc:9090"


def test_artifactory_connection_token_or_basic_auth(connection):
    from requests.auth import HTTPBasicAuth

    from llm_release_airflow.hooks.artifactory import ArtifactoryHook

    connection("tok", conn_type="artifactory", host="artifactory.example.com/artifactory", password="secret-token",
               extra={"repo": "llm-engines", "prefix": "prod/"})
    store = ArtifactoryHook(artifactory_conn_id="tok").get_store()
    assert store.base_url == "https://artifactory.example.com/artifactory"
    assert (store.repo, store.prefix) == ("llm-engines", "prod")
    assert "secret-token" not in repr(store._auth)  # never in a log line
    assert ArtifactoryHook(artifactory_conn_id="tok").get_store(prefix="canary").prefix == "canary"
    connection("basic", conn_type="artifactory", host="https://af.example/artifactory", login="ci", password="pw",
               extra={"repo": "llm-engines"})
    assert isinstance(ArtifactoryHook(artifactory_conn_id="basic").get_store()._auth, HTTPBasicAuth)


def test_artifactory_connection_without_repo_names_the_extra(connection):
    from llm_release_airflow.hooks.artifactory import ArtifactoryHook

    connection("a", conn_type="artifactory", host="https://af.example/artifactory", extra={"repo": None})
    with pytest.raises(SpecError, match="connection a: extra 'repo'.*generic repository"):
        ArtifactoryHook(artifactory_conn_id="a").get_store()


def test_oci_registry_connection(connection):
    from llm_release_airflow.hooks.oci_registry import OciRegistryHook

    connection("o", conn_type="oci_registry", host="registry.local", port=5000, login="u", password="p",
               extra={"insecure": True, "namespace": None})
    store = OciRegistryHook(oci_conn_id="o").get_store()
    assert store.registry == "registry.local:5000" and store.namespace == "llm-release"
    assert store.http.scheme == "http"
    connection("o2", conn_type="oci_registry", host="registry.example.com", extra={"insecure": "false"})
    assert OciRegistryHook(oci_conn_id="o2").get_store().http.scheme == "https"


def test_s3_source_goes_through_the_amazon_providers_connection(connection):
    from llm_release.artifacts.stores.s3 import S3Store
    from llm_release_airflow.hooks.artifact_store import store_for_source

    connection("s3", conn_type="aws", login="AKIAEXAMPLE", password="secret",
               extra={"endpoint_url": "http://127.0.0.1:5000", "region_name": "eu-west-1"})
    store = store_for_source({"kind": "s3", "conn_id": "s3", "bucket": "llm-artifacts", "prefix": "engines"})
    assert isinstance(store, S3Store)
    assert store.describe() == "s3://llm-artifacts/engines"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:5000"
    assert store.client.meta.region_name == "eu-west-1"
