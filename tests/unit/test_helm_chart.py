"""The serving chart renders valid objects, and refuses traffic weights that do not add up."""

from pathlib import Path

import helm_python
import pytest
import yaml

CHART = str(Path(__file__).resolve().parents[2] / "charts" / "llm-release-serving")


def render(values: dict) -> list[dict]:
    out = helm_python.Chart.load(CHART).render(values, name="r42", namespace="llm")
    docs = []
    for name, text in out.items():
        if name.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kinds(docs):
    return sorted(d["kind"] for d in docs)


def test_defaults_render_triton_with_explicit_model_control_and_its_pvc():
    docs = render({})
    assert {"Deployment", "PersistentVolumeClaim", "Service"} <= set(kinds(docs))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--model-control-mode=explicit" in args


def test_istio_split_writes_the_weights_and_one_subset_per_version():
    docs = render({"traffic": {"provider": "istio", "versions": [{"name": "stable", "weight": 90},
                                                                 {"name": "canary", "weight": 10}]}})
    (vs,) = [d for d in docs if d["kind"] == "VirtualService"]
    (dr,) = [d for d in docs if d["kind"] == "DestinationRule"]
    split = vs["spec"]["http"][-1]["route"]
    assert sorted((r["destination"]["subset"], r["weight"]) for r in split) == [("canary", 10), ("stable", 90)]
    assert sorted(s["name"] for s in dr["spec"]["subsets"]) == ["canary", "stable"]


def test_gateway_api_split_uses_backend_ref_weights():
    docs = render({"traffic": {"provider": "gatewayapi", "versions": [{"name": "blue", "weight": 50},
                                                                      {"name": "green", "weight": 50}]}})
    (route,) = [d for d in docs if d["kind"] == "HTTPRoute"]
    weights = [ref["weight"] for ref in route["spec"]["rules"][-1]["backendRefs"]]
    assert weights == [50, 50]


def test_weights_summing_to_99_are_refused_with_the_field_named():
    with pytest.raises(Exception) as err:
        render({"traffic": {"provider": "istio", "versions": [{"name": "stable", "weight": 90},
                                                              {"name": "canary", "weight": 9}]}})
    assert "weights sum to 99" in str(err.value)
