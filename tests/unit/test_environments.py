"""Environment specs: validated eagerly with field-named errors; one factory builds the router,
the served-versions object and the metrics client for the topology stated once."""

from __future__ import annotations

import pytest

from llm_release.environments import Environment, EnvironmentSet
from llm_release.errors import SpecError
from llm_release.serving import DeploymentPerVersion, ModelPerRelease, PlainVersions


def env_doc(**over):
    doc = {"name": "production", "region": "eu", "prometheus_url": "http://prom:9090",
           "gateway_url": "http://gw:10000",
           "triton": {"url": "http://triton.serving.svc:8000", "model_repository": "/models"},
           "router": {"kind": "envoy", "admin_url": "http://envoy:9901", "control_plane_url": "http://xds:18090",
                      "shadow_listener": "127.0.0.1:10001"}}
    doc.update(over)
    return doc


def test_production_requires_approval_unless_told_otherwise():
    assert Environment.from_dict(env_doc()).approval_required
    assert not Environment.from_dict(env_doc(name="staging")).approval_required
    assert not Environment.from_dict(env_doc(approval_required=False)).approval_required


@pytest.mark.parametrize("over, field", [
    ({"name": "Prod"}, "environment.name"),
    ({"prometheus_url": "prom:9090"}, "prometheus_url"),
    ({"router": {"kind": "nginx"}}, "router.kind"),
    ({"router": {"kind": "envoy", "admin_url": "http://e:9901"}}, "router.control_plane_url"),
    ({"router": {"kind": "istio", "namespace": "s"}}, "router.virtual_service"),
    ({"router": {"kind": "envoy", "admin_url": "http://e:9901", "control_plane_url": "http://x:18090", "shadow_listener": "nope"}},
     "router.shadow_listener"),
    ({"triton": {"url": "http://t:8000", "topology": "sharded"}}, "triton.topology"),
    ({"triton": {"topology": "deployment_per_version"}}, "triton.deployments"),
    ({"requires_passed": "production"}, "requires_passed"),
    ({"disabled_checks": {"gpu_headroom": ""}}, "disabled_checks"),
    ({"colour": "blue"}, "colour"),
])
def test_a_bad_environment_names_the_field(over, field):
    with pytest.raises(SpecError) as caught:
        Environment.from_dict(env_doc(**over))
    assert field in str(caught.value)
    assert "production/eu" in str(caught.value) or field.startswith("environment.name")


def test_the_router_is_built_for_the_environment_topology():
    router = Environment.from_dict(env_doc()).router_instance()
    assert router.kind == "envoy" and router.topology == "versions"
    assert router.upstream == ("triton.serving.svc", 8000) and router.shadow_listener == ("127.0.0.1", 10001)
    per_release = Environment.from_dict(env_doc(triton={"url": "http://t:8000", "topology": "model_per_release"}))
    assert per_release.router_instance().topology == "model_per_release"
    assert isinstance(per_release.served_versions(), ModelPerRelease)
    assert per_release.triton_model("llama", 42) == "llama_r42"
    per_version = Environment.from_dict(env_doc(triton={"topology": "deployment_per_version", "deployments": {
        "1": "http://triton-v1:8000", "2": "http://triton-v2:8001"}}))
    assert per_version.router_instance().backends == {1: ("triton-v1", 8000), 2: ("triton-v2", 8001)}
    assert isinstance(per_version.served_versions(), DeploymentPerVersion)
    assert isinstance(Environment.from_dict(env_doc()).served_versions(), PlainVersions)
    assert Environment.from_dict(env_doc()).metrics().base_url == "http://prom:9090"


def test_an_environment_set_looks_up_by_name_and_region():
    envs = EnvironmentSet.from_doc([env_doc(name="staging", region="eu"), env_doc(region="eu", requires_passed="staging"),
                                    env_doc(region="us", requires_passed="staging")])
    assert envs.get("staging").key == "staging/eu"
    assert envs.get("production", "us").key == "production/us"
    with pytest.raises(SpecError, match="region.*eu, us"):
        envs.get("production")
    with pytest.raises(SpecError, match="known: production, staging"):
        envs.get("dev")
    with pytest.raises(SpecError, match="defined twice"):
        EnvironmentSet.from_doc([env_doc(), env_doc()])
    with pytest.raises(SpecError, match="'qa' is not defined"):
        EnvironmentSet.from_doc([env_doc(requires_passed="qa")])
