"""The nightly build spec: validated before anything is built, errors naming the field."""

from __future__ import annotations

import pytest

from llm_release.build.backends import get_builder
from llm_release.build.nightly import NightlySpec, build_inputs, inputs_digest
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError

LIMITS = {"max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}


def spec(**overrides):
    doc = {"models": [{"model": "reference_lm", "checkpoint": "/data/ckpt/reference_lm"}], "limits": LIMITS}
    doc.update(overrides)
    return NightlySpec.from_dict(doc)


def test_one_variant_keeps_the_model_name_and_a_matrix_names_each_variant():
    assert [name for _, name, _ in spec().variants()] == ["reference_lm"]
    many = spec(precisions=["fp32", "fp16"], builder="reference")
    assert [name for _, name, _ in many.variants()] == ["reference_lm_fp32_tp1", "reference_lm_fp16_tp1"]
    trt = spec(builder="tensorrt_llm", precisions=["fp16", "fp8"], tp_sizes=[1, 2],
               models=[{"model": "llama", "checkpoint": "/checkpoints/llama", "model_family": "llama"}])
    variants = trt.variants()
    assert [name for _, name, _ in variants] == ["llama_fp16_tp1", "llama_fp16_tp2", "llama_fp8_tp1", "llama_fp8_tp2"]
    assert [(p.precision, p.tp_size) for _, _, p in variants] == [("fp16", 1), ("fp16", 2), ("fp8", 1), ("fp8", 2)]


@pytest.mark.parametrize("overrides, field", [
    ({"models": []}, "models"),
    ({"models": [{"model": "bad;name", "checkpoint": "/c"}]}, "models[0].model"),
    ({"models": [{"model": "m", "checkpoint": "/c/$(rm -rf /)"}]}, "models[0].checkpoint"),
    ({"models": [{"model": "m", "checkpoint": "relative/path"}]}, "models[0].checkpoint"),
    ({"models": [{"model": "m", "checkpoint": "/c/../etc"}]}, "models[0].checkpoint"),
    ({"models": [{"model": "m", "checkpoint": "/c", "colour": 1}]}, "models[0].colour"),
    ({"precisions": ["fp7"]}, "precisions"),
    ({"tp_sizes": [2]}, "tp_sizes"),  # the reference builder runs on one CPU
    ({"tp_sizes": ["2"]}, "tp_sizes[0]"),
    ({"precisions": ["fp32", "fp32"]}, "precisions"),
    ({"limits": {**LIMITS, "max_input_len": 512}}, "limits.max_seq_len"),
    ({"limits": {**LIMITS, "precision": "fp16"}}, "limits.precision"),
    ({"builder": "make"}, "builder"),
    ({"builder": "tensorrt_llm"}, "models[0].model_family"),
    ({"work_dir": "builds"}, "work_dir"),
    ({"force": "yes"}, "force"),
    ({"image": "nvcr.io/x:1 ; rm"}, "image"),
])
def test_bad_nightly_input_is_refused_naming_the_field(overrides, field):
    with pytest.raises(SpecError) as err:
        spec(**overrides)
    assert err.value.field == field, str(err.value)


def test_llm_api_refuses_quantized_precisions():
    with pytest.raises(SpecError) as err:
        spec(builder="llm_api", precisions=["int4_awq"])
    assert err.value.field == "precisions" and "quantiz" in str(err.value)


def test_build_inputs_ignore_unset_optional_fields_but_see_every_real_change():
    params = BuildParams.from_dict({**LIMITS, "precision": "fp32"})
    digest = "sha256:" + "a" * 64
    same = build_inputs(checkpoint_digest=digest, params=BuildParams.from_dict(params.to_dict()), builder="reference",
                        image=None)
    assert same == build_inputs(checkpoint_digest=digest, params=params, builder="reference", image=None)
    assert same["builder"] == get_builder("reference").metadata_name
    changed = [
        build_inputs(checkpoint_digest="sha256:" + "b" * 64, params=params, builder="reference", image=None),
        build_inputs(checkpoint_digest=digest, params=BuildParams.from_dict({**LIMITS, "precision": "fp16"}),
                     builder="reference", image=None),
        build_inputs(checkpoint_digest=digest, params=params, builder="llm_api", image=None),
        build_inputs(checkpoint_digest=digest, params=params, builder="reference", image="repo@sha256:" + "c" * 64),
    ]
    assert len({inputs_digest(x) for x in changed + [same]}) == 5


def test_published_engines_become_one_release_each_and_foreign_events_are_skipped():
    from llm_release.build.nightly import releases_from_events

    digest = "sha256:" + "d" * 64
    extras = [{"model": "llama", "version": 7, "manifest_digest": digest, "store": "s3://b/engines"},
              {"model": "llama", "version": 7, "manifest_digest": digest},  # the same engine announced twice
              {"model": "qwen", "version": 2},
              {"note": "written by another producer"}, None, {"model": "x", "version": "3"}]
    assert releases_from_events(extras, "staging") == [
        {"model": "llama", "version": 7, "environment": "staging", "artifact_digest": digest},
        {"model": "qwen", "version": 2, "environment": "staging"},
    ]
