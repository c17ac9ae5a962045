"""The Envoy route documents: cumulative fractions, pinned routes, validation."""

import pytest

from llm_release.errors import SpecError
from llm_release.routing.envoy import ModelRoute, cluster_name, model_routes, route_config, validate_weights


def test_split_routes_use_cumulative_fractions_and_last_route_catches_the_rest():
    routes = model_routes("m", ModelRoute(weights={1: 70, 2: 20, 3: 10}, versions={1, 2, 3}))
    split = [r for r in routes if r["metadata"]["filter_metadata"]["llm_release"]["kind"] == "split"]
    fractions = [r["match"].get("runtime_fraction", {}).get("default_value", {}).get("numerator") for r in split]
    assert fractions == [70, 90, None]
    assert [r["route"]["cluster"] for r in split] == ["m_v1", "m_v2", "m_v3"]
    assert split[1]["route"]["regex_rewrite"]["substitution"] == "/v2/models/m/versions/2/\\1"


def test_every_known_version_has_a_pinned_route_even_without_weight():
    routes = model_routes("m", ModelRoute(weights={2: 100}, versions={1, 2}))
    pinned = [r for r in routes if r["name"].endswith("-pinned")]
    assert [r["route"]["cluster"] for r in pinned] == ["m_v1", "m_v2"]


def test_route_config_ends_with_repository_deny_and_passthrough():
    names = [r["name"] for r in route_config({})["virtual_hosts"][0]["routes"]]
    assert names == ["deny-repository", "passthrough"]


def test_model_names_are_escaped_in_regexes():
    routes = model_routes("a.b", ModelRoute(weights={1: 100}, versions={1}))
    assert "a\\.b" in routes[0]["match"]["safe_regex"]["regex"]
    assert cluster_name("a.b", 1) == "a.b_v1"


@pytest.mark.parametrize("weights, field, words", [
    ({1: 60, 2: 39}, "weights", "sum to 99"),
    ({1: 101}, "weights[1]", "outside 0..100"),
    ({1: -5, 2: 105}, "weights[1]", "outside"),
    ({1: True}, "weights[1]", "integer"),
    ({"1": 100}, "weights", "positive integer"),
    ({}, "weights", "no versions"),
])
def test_bad_weights_name_the_field(weights, field, words):
    with pytest.raises(SpecError) as err:
        validate_weights("m", weights)
    assert err.value.field == field
    assert words in str(err.value)


def test_bad_model_name():
    with pytest.raises(SpecError) as err:
        validate_weights("../etc", {1: 100})
    assert err.value.field == "model"
