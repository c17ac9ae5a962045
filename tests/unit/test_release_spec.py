"""The release spec: bad input refused before anything moves, naming the field; the trigger
form's schema comes from the same definition; the stages each strategy plans."""

from __future__ import annotations

import jsonschema
import pytest

from llm_release.errors import SpecError
from llm_release.release.machine import plan_stages
from llm_release.release.spec import FIELDS, ReleaseSpec, params_schema
from llm_release.routing.state import RoutingState


@pytest.mark.parametrize("doc, field, fix", [
    ({"model": "m; rm -rf /", "version": 2}, "model", "shell characters"),
    ({"model": "m", "version": "latest"}, "version", "never resolves 'latest'"),
    ({"model": "m", "version": 0}, "version", "range"),
    ({"model": "m", "version": 2, "steps": [10, 10, 100]}, "steps[1]", "increasing order"),
    ({"model": "m", "version": 2, "steps": [10, 150]}, "steps[1]", "1 to 100"),
    ({"model": "m", "version": 2, "steps": []}, "steps", "e.g. [1, 10, 50, 100]"),
    ({"model": "m", "version": 2, "environment": "Prod uction"}, "environment", "lower-case"),
    ({"model": "m", "version": 2, "strategy": "yolo"}, "strategy", "canary"),
    ({"model": "m", "version": 2, "baseline": 2}, "baseline", "name the version serving now"),
    ({"model": "m", "version": 2, "min_soak_s": 100, "max_soak_s": 10}, "max_soak_s", "at least as long"),
    ({"model": "m", "version": 2, "artifact_digest": "md5:abc"}, "artifact_digest", "sha256:"),
    ({"model": "m", "version": 2, "approvers": ["a b"]}, "approvers", "user ids"),
    ({"model": "m", "version": 2, "stepz": [1]}, "stepz", "known:"),
    ({"model": "m", "version": 2, "analysis": {"alpha": 7}}, "alpha", ""),
])
def test_bad_input_is_refused_naming_the_field(doc, field, fix):
    with pytest.raises(SpecError) as caught:
        ReleaseSpec.from_dict(doc)
    assert field in str(caught.value) and fix in str(caught.value)


def test_a_canary_always_ends_at_all_traffic():
    assert ReleaseSpec.from_dict({"model": "m", "version": 2, "steps": [5, 25]}).steps == (5, 25, 100)
    assert ReleaseSpec.from_dict({"model": "m", "version": 2, "strategy": "shadow", "steps": [5, 25]}).steps == (5, 25)


def test_the_form_schema_is_the_spec_definition():
    schema = params_schema()
    assert list(schema) == [f.name for f in FIELDS]
    defaults = ReleaseSpec.from_dict({"model": "m", "version": 2}).to_dict()
    for name, param in schema.items():
        if param["default"] is not None:
            assert defaults[name] == param["default"] or (name == "steps" and list(defaults[name]) == param["default"])
    # What the form accepts, the core accepts; what the form refuses (a string version), the core refuses too.
    json_schema = {"type": "object", "properties": {k: {kk: vv for kk, vv in v.items() if kk not in ("default", "section")}
                                                    for k, v in schema.items()}}
    good = {"model": "m", "version": 3, "environment": "production", "steps": [1, 10, 100], "region": None,
            "baseline": None, "artifact_digest": None}
    jsonschema.validate(good, json_schema)
    ReleaseSpec.from_dict(good)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"model": "m", "version": "latest"}, json_schema)


STABLE = RoutingState("m", {1: 100}, header="x-team", header_routes={"qa": 1})


def spec(**kw):
    return ReleaseSpec.from_dict({"model": "m", "version": 2, **kw})


def test_canary_stages_keep_the_stable_routes_and_end_on_the_candidate():
    stages, final = plan_stages(spec(steps=[1, 10, 50]), STABLE, 1)
    assert [s.routing.weights for s in stages] == [{1: 99, 2: 1}, {1: 90, 2: 10}, {1: 50, 2: 50}]
    assert all(s.routing.header_routes == {"qa": 1} for s in stages)
    assert final == RoutingState("m", {2: 100})


def test_blue_green_is_judged_on_a_full_mirror_then_switched():
    stages, final = plan_stages(spec(strategy="blue_green"), STABLE, 1)
    (stage,) = stages
    assert stage.shadow and stage.routing.mirror_version == 2 and stage.routing.mirror_percent == 100
    assert stage.routing.weights == {1: 100} and final == RoutingState("m", {2: 100})


def test_shadow_and_ab_end_where_they_began():
    stages, final = plan_stages(spec(strategy="shadow", steps=[10, 100]), STABLE, 1)
    assert [s.routing.mirror_percent for s in stages] == [10, 100] and final == STABLE
    stages, final = plan_stages(spec(strategy="ab", ab_header="x-team", ab_value="B"), STABLE, 1)
    assert stages[0].routing.header_routes == {"qa": 1, "B": 2} and final == STABLE
