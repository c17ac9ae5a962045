"""The Envoy route documents: cumulative fractions, pinned and header routes, mirrors, read-back."""

import pytest

from llm_release.errors import SpecError
from llm_release.routing.envoy import (base_scopes, cluster_name, model_routes, model_scopes, parse_model_state,
                                       scope_name)
from llm_release.routing.state import RoutingState


def record(state, versions, topology="versions", **extra):
    return {"versions": sorted(versions), "state": state.to_dict(), "topology": topology, **extra}


def vhost_routes(state, versions, topology="versions"):
    """The model's route table as its scope carries it."""
    return model_scopes(state.model, record(state, versions, topology))[0]["route_configuration"]


def test_split_routes_use_cumulative_fractions_and_last_route_catches_the_rest():
    routes = model_routes(RoutingState("m", {1: 70, 2: 20, 3: 10}), {1, 2, 3})
    split = [r for r in routes if r["name"].endswith("-split")]
    fractions = [r["match"].get("runtime_fraction", {}).get("default_value", {}).get("numerator") for r in split]
    assert fractions == [70, 90, None]
    assert [r["route"]["cluster"] for r in split] == ["m_v1", "m_v2", "m_v3"]
    assert split[1]["route"]["regex_rewrite"]["substitution"] == "/v2/models/m/versions/2/\\1"


def test_header_routes_come_before_the_split_and_pinned_routes_first():
    state = RoutingState("m", {1: 100}, header="x-experiment", header_routes={"B": 2, "A": 1})
    names = [r["name"] for r in model_routes(state, {1, 2})]
    assert names == ["m-v1-pinned", "m-v2-pinned", "m-ab-A", "m-ab-B", "m-v1-split"]


def test_mirror_goes_to_the_shadow_cluster_addressed_by_host_in_shared_triton():
    state = RoutingState("m", {1: 100}, mirror_version=2, mirror_percent=100)
    (split,) = [r for r in model_routes(state, {1, 2}) if r["name"].endswith("-split")]
    (mirror,) = split["route"]["request_mirror_policies"]
    assert mirror["cluster"] == cluster_name("m", 2, shadow=True) == "m_v2_shadow"
    assert mirror["host_rewrite_literal"] == "m.v2.shadow"
    shadow = vhost_routes(state, {1, 2})
    (vhost,) = [h for h in shadow["virtual_hosts"] if h["domains"] == ["m.v2.shadow"]]
    assert vhost["routes"][0]["route"]["regex_rewrite"]["substitution"] == "/v2/models/m/versions/2/\\2"


def test_model_per_release_rewrites_the_model_name():
    routes = model_routes(RoutingState("llama", {42: 100}), {42}, "model_per_release")
    assert routes[-1]["route"]["regex_rewrite"]["substitution"] == "/v2/models/llama_r42/\\1"


def test_deployment_per_version_does_not_rewrite():
    routes = model_routes(RoutingState("m", {1: 50, 2: 50}), {1, 2}, "deployment_per_version")
    assert all("regex_rewrite" not in r["route"] for r in routes)


@pytest.mark.parametrize("state", [
    RoutingState("m", {1: 90, 2: 10}),
    RoutingState("m", {2: 100}, header="x-experiment", header_routes={"B": 2, "A": 1}),
    RoutingState("m", {1: 80, 2: 20}, mirror_version=3, mirror_percent=50),
])
def test_what_is_rendered_parses_back_to_the_same_state(state):
    doc = vhost_routes(state, {1, 2, 3})
    assert parse_model_state("m", doc) == state
    assert parse_model_state("other", doc) is None


def test_a_models_scope_is_keyed_by_its_path_segments_and_ends_in_a_passthrough():
    (scope,) = model_scopes("m", record(RoutingState("m", {1: 100}), {1}, forgotten=[3]))
    assert scope["name"] == scope_name("m") and scope["key"]["fragments"] == [{"string_key": "models"},
                                                                             {"string_key": "m"}]
    main = [h for h in scope["route_configuration"]["virtual_hosts"] if h["domains"] == ["*"]][0]
    names = [r["name"] for r in main["routes"]]
    assert names[-2:] == ["m-forgotten", "m-passthrough"]
    # the router's record travels with the scope: any host that reaches the control plane can read it
    assert scope["route_configuration"]["metadata"]["filter_metadata"]["llm_release"]["record"]["forgotten"] == [3]


def test_release_names_get_a_scope_for_the_mirrored_copies_that_carry_them():
    scopes = model_scopes("llama", record(RoutingState("llama", {7: 100}, mirror_version=8, mirror_percent=100),
                                          {7, 8}, "model_per_release"))
    assert [s["name"] for s in scopes] == ["models/llama", "models/llama_r7", "models/llama_r8"]
    alias = scopes[1]["route_configuration"]["virtual_hosts"]
    (shadow8,) = [h for h in alias if h["domains"] == ["llama.v8.shadow"]]
    assert shadow8["routes"][0]["route"]["regex_rewrite"]["substitution"] == "/v2/models/llama_r8/\\2"


def test_the_base_scopes_pass_health_through_and_refuse_the_repository_api():
    kinds = {tuple(f["string_key"] for f in s["key"]["fragments"]):
             s["route_configuration"]["virtual_hosts"][0]["routes"][0] for s in base_scopes()}
    assert kinds[("health", "ready")]["route"]["cluster"] == "triton"
    assert kinds[("repository", "index")]["direct_response"]["status"] == 403
    assert kinds[("repository", "models")]["direct_response"]["status"] == 403


def test_model_names_are_escaped_in_regexes():
    routes = model_routes(RoutingState("a.b", {1: 100}), {1})
    assert "a\\.b" in routes[0]["match"]["safe_regex"]["regex"]


@pytest.mark.parametrize("kwargs, field, words", [
    ({"weights": {1: 60, 2: 39}}, "weights", "sum to 99"),
    ({"weights": {1: 101}}, "weights[1]", "outside 0..100"),
    ({"weights": {1: -5, 2: 105}}, "weights[1]", "outside"),
    ({"weights": {1: True}}, "weights[1]", "integer"),
    ({"weights": {"1": 100}}, "weights", "positive integer"),
    ({"weights": {}}, "weights", "no versions"),
    ({"weights": {1: 100}, "header": "X Bad", "header_routes": {"B": 2}}, "header", "header name"),
    ({"weights": {1: 100}, "header": "x-experiment", "header_routes": {"B": 0}}, "header_routes[B]", "positive"),
    ({"weights": {1: 100}, "mirror_version": 1, "mirror_percent": 100}, "mirror_version", "already takes all"),
    ({"weights": {1: 100}, "mirror_version": 2, "mirror_percent": 101}, "mirror_percent", "outside"),
    ({"model": "../etc", "weights": {1: 100}}, "model", "valid Triton model name"),
])
def test_bad_states_name_the_field(kwargs, field, words):
    with pytest.raises(SpecError) as err:
        RoutingState(**{"model": "m", **kwargs})
    assert err.value.field == field
    assert words in str(err.value)


def test_a_dotted_model_has_clusters_whose_statistics_keep_their_whole_name():
    # Envoy tags `cluster.<name>.upstream_rq_total` with the name up to the first dot
    assert "." not in cluster_name("llama-3.1-8b", 2) and "." not in cluster_name("llama-3.1-8b", 2, shadow=True)
    assert cluster_name("llama-3.1-8b", 2) != cluster_name("llama-3_1-8b", 2)  # no two models share one
    state = RoutingState("llama-3.1-8b", {1: 90, 2: 10}, mirror_version=3, mirror_percent=50)
    doc = vhost_routes(state, {1, 2, 3})
    assert parse_model_state("llama-3.1-8b", doc) == state
    assert parse_model_state("llama-3x1-8b", doc) is None  # the dot is not a wildcard
