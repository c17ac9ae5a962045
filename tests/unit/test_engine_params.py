"""BuildParams: every bad value is refused with the field named and a way to fix it."""

import dataclasses

import pytest

from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError

GOOD = {"precision": "fp16", "max_batch_size": 8, "max_input_len": 128, "max_seq_len": 256}


def test_round_trip_with_defaults():
    params = BuildParams.from_dict(GOOD)
    assert (params.tp_size, params.pp_size) == (1, 1)
    assert params.to_dict() == {**GOOD, "tp_size": 1, "pp_size": 1}
    assert BuildParams.from_dict(params.to_dict()) == params


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BuildParams.from_dict(GOOD).precision = "fp32"


def test_unsupported_precision_message():
    with pytest.raises(SpecError) as err:
        BuildParams.from_dict({**GOOD, "precision": "fp7"})
    assert err.value.field == "precision"
    assert str(err.value) == ("precision: 'fp7' is not a supported precision; "
                              "use one of fp32, fp16, int8")


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
    ({"tp_size": 2}, "tp_size"),
    ({"pp_size": 2}, "pp_size"),
    ({"tp_size": 0}, "tp_size"),
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
    with pytest.raises(SpecError, match="not supported by the reference builder"):
        BuildParams.from_dict({**GOOD, "tp_size": 2})


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
