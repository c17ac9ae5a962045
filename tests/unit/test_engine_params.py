"""BuildParams: every bad value is refused with the field named and a way to fix it."""

import dataclasses

import pytest

from llm_release.engine.params import BuildParams, build_params_schema, check_reference_supports
from llm_release.errors import SpecError

GOOD = {"precision": "fp16", "max_batch_size": 8, "max_input_len": 128, "max_seq_len": 256}


def test_round_trip_with_defaults():
    params = BuildParams.from_dict(GOOD)
    assert (params.tp_size, params.pp_size) == (1, 1)
    assert params.to_dict() == {**GOOD, "tp_size": 1, "pp_size": 1, "max_num_tokens": None,
                                "kv_cache_type": "paged", "kv_cache_dtype": None}
    assert BuildParams.from_dict(params.to_dict()) == params


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BuildParams.from_dict(GOOD).precision = "fp32"


def test_unsupported_precision_message():
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict({**GOOD, "precision": "fp7"})
    assert err.value.field == "precision"
    assert str(err.value) == ("precision: 'fp7' is not a supported precision; "
                              "use one of fp32, fp16, bf16, fp8, int8, int8_sq, int4_wo, int4_awq")


@pytest.mark.parametrize("change, field", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_size": 4097}, "max_batch_size"),
    ({"max_batch_size": "8"}, "max_batch_size"),
    ({"max_batch_size": True}, "max_batch_size"),
    ({"max_batch_size": 8.0}, "max_batch_size"),
    ({"max_input_len": 0}, "max_input_len"),
    ({"max_input_len": None}, "max_input_len"),
    ({"max_seq_len": 128}, "max_seq_len"),
    ({"max_seq_len": 100}, "max_seq_len"),
    ({"max_seq_len": 65537}, "max_seq_len"),
    ({"precision": "FP16"}, "precision"),
    ({"precision": 16}, "precision"),
    ({"tp_size": 0}, "tp_size"),
    ({"pp_size": 65}, "pp_size"),
    ({"tp_size": 16, "pp_size": 8}, "tp_size"),
    ({"max_num_tokens": 127}, "max_num_tokens"),
    ({"max_num_tokens": 8 * 256 + 1}, "max_num_tokens"),
    ({"max_num_tokens": "512"}, "max_num_tokens"),
    ({"kv_cache_type": "pagd"}, "kv_cache_type"),
    ({"kv_cache_dtype": "fp4"}, "kv_cache_dtype"),
    ({"kv_cache_dtype": "fp8", "kv_cache_type": "disabled"}, "kv_cache_dtype"),
    ({"kv_cache_dtype": "int8", "precision": "fp32"}, "kv_cache_dtype"),
    ({"kv_cache_dtype": "int8", "precision": "fp8"}, "kv_cache_dtype"),
])
def test_bad_values_name_the_field(change, field):
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict({**GOOD, **change})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert err.value.fix


def test_string_number_says_it_is_a_string():
    with pytest.raises(SpecError, match=r"max_batch_size: '8' is a str, not an integer"):
        BuildParams.from_dict({**GOOD, "max_batch_size": "8"})


def test_bool_is_not_an_int():
    with pytest.raises(SpecError, match=r"max_input_len: True is a bool"):
        BuildParams.from_dict({**GOOD, "max_input_len": True})


def test_max_seq_len_must_exceed_max_input_len():
    with pytest.raises(SpecError, match=r"max_seq_len: 128 must be greater than max_input_len"):
        BuildParams.from_dict({**GOOD, "max_seq_len": 128})


def test_parallelism_refusal_is_explained():
    params = BuildParams.from_dict({**GOOD, "tp_size": 2})  # valid for TensorRT-LLM
    with pytest.raises(SpecError, match="not supported by the reference builder"):
        check_reference_supports(params)


@pytest.mark.parametrize("change, field", [
    ({"tp_size": 2}, "tp_size"),
    ({"pp_size": 2}, "pp_size"),
    ({"precision": "bf16"}, "precision"),
    ({"precision": "int4_awq"}, "precision"),
    ({"kv_cache_dtype": "int8"}, "kv_cache_dtype"),
    ({"kv_cache_type": "disabled"}, "kv_cache_type"),
    ({"max_num_tokens": 256}, "max_num_tokens"),
])
def test_reference_builder_refuses_what_it_cannot_do(change, field):
    params = BuildParams.from_dict({**GOOD, **change})
    with pytest.raises(SpecError) as err:
        check_reference_supports(params)
    assert err.value.field == field
    assert "reference builder" in str(err.value)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_reference_builder_accepts_its_precisions(precision):
    params = BuildParams.from_dict({**GOOD, "precision": precision})
    assert check_reference_supports(params) is params


def test_trtllm_only_specs_are_valid_build_params():
    params = BuildParams.from_dict({**GOOD, "precision": "fp8", "tp_size": 3, "pp_size": 2,
                                    "max_num_tokens": 128, "kv_cache_dtype": "fp8",
                                    "kv_cache_type": "paged"})
    assert params.world_size == 6
    assert BuildParams.from_dict(params.to_dict()) == params


def test_max_num_tokens_bounds_are_inclusive():
    assert BuildParams.from_dict({**GOOD, "max_num_tokens": 128}).max_num_tokens == 128
    assert BuildParams.from_dict({**GOOD, "max_num_tokens": 8 * 256}).max_num_tokens == 2048


def test_schema_matches_the_validation():
    schema = build_params_schema()
    props = schema["properties"]
    assert sorted(props) == sorted(BuildParams.from_dict(GOOD).to_dict())
    assert schema["required"] == ["precision", "max_batch_size", "max_input_len", "max_seq_len"]
    assert props["precision"]["enum"] == ["fp32", "fp16", "bf16", "fp8", "int8", "int8_sq",
                                          "int4_wo", "int4_awq"]
    assert props["max_batch_size"]["maximum"] == 4096
    assert props["kv_cache_dtype"]["enum"] == ["fp8", "int8", None]
    assert props["kv_cache_type"]["default"] == "paged"
    assert all(p["description"] for p in props.values())
    # every enum value is accepted, and one past each maximum is refused
    for value in props["precision"]["enum"]:
        BuildParams.from_dict({**GOOD, "precision": value})
    with pytest.raises(SpecError):
        BuildParams.from_dict({**GOOD, "max_batch_size": props["max_batch_size"]["maximum"] + 1})


def test_unknown_key_named_with_allowed_keys():
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict({**GOOD, "max_output_len": 64})
    assert err.value.field == "max_output_len"
    assert "max_output_len" in str(err.value)
    for allowed in ("precision", "max_batch_size", "max_input_len", "max_seq_len", "tp_size"):
        assert allowed in err.value.fix


def test_several_unknown_keys_all_named():
    with pytest.raises(SpecError, match="paged_kv_cache, use_fp8"):
        BuildParams.from_dict({**GOOD, "use_fp8": True, "paged_kv_cache": True})


def test_missing_key_named():
    data = dict(GOOD)
    del data["max_seq_len"]
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict(data)
    assert err.value.field == "max_seq_len"


def test_not_a_mapping():
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict(["fp16"])
    assert err.value.field == "build_params"


def test_direct_construction_is_validated_too():
    with pytest.raises(SpecError):
        BuildParams(precision="fp32", max_batch_size=1, max_input_len=10, max_seq_len=5)
