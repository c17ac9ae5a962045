"""Triton config: the JSON form is a valid ModelConfig and config.pbtxt round-trips."""

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from llm_release.engine.params import BuildParams
from llm_release.triton_config import ENUM_FIELDS, MAP_FIELDS, reference_model_config, to_pbtxt

PARAMS = BuildParams(precision="int8", max_batch_size=16, max_input_len=64, max_seq_len=256)


def _from_dict(config):
    return json_format.ParseDict(config, model_config_pb2.ModelConfig())


def _from_pbtxt(text):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_reference_config_shape():
    config = reference_model_config("reference_lm", PARAMS)
    assert config["name"] == "reference_lm"
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 16
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
    assert config["version_policy"] == {"all": {}}
    inputs = {i["name"]: i for i in config["input"]}
    assert inputs["text_input"] == {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}
    assert inputs["max_tokens"]["data_type"] == "TYPE_INT32"
    assert not inputs["max_tokens"].get("optional")
    for name in ("stream", "temperature", "top_k", "top_p", "random_seed", "stop_words",
                 "end_id", "pad_id"):
        assert inputs[name]["optional"] is True
    assert inputs["stop_words"]["dims"] == [-1]
    assert inputs["random_seed"]["data_type"] == "TYPE_UINT64"
    assert config["output"] == [{"name": "text_output", "data_type": "TYPE_STRING",
                                 "dims": [-1]}]


def test_json_form_is_a_valid_model_config():
    message = _from_dict(reference_model_config("reference_lm", PARAMS))
    assert message.model_transaction_policy.decoupled
    assert message.version_policy.HasField("all")


def test_pbtxt_round_trips():
    config = reference_model_config("reference_lm", PARAMS)
    assert _from_pbtxt(to_pbtxt(config)) == _from_dict(config)


def test_pbtxt_enums_are_bare_words_and_version_policy_all():
    text = to_pbtxt(reference_model_config("m", PARAMS))
    assert "data_type: TYPE_STRING\n" in text
    assert "kind: KIND_CPU\n" in text
    assert '"TYPE_' not in text
    assert "version_policy {\n  all {\n  }\n}\n" in text


def test_pbtxt_without_version_policy():
    config = reference_model_config("m", PARAMS)
    del config["version_policy"]
    text = to_pbtxt(config)
    assert "version_policy" not in text
    assert not _from_pbtxt(text).HasField("version_policy")


def test_maps_strings_and_specific_versions_round_trip():
    config = {
        "name": "m",
        "backend": "python",
        "version_policy": {"specific": {"versions": [1, 3]}},
        "parameters": {
            "EXECUTION_ENV_PATH": {"string_value": "/envs/a \"quoted\" path\\x"},
            "note": {"string_value": "line one\nline two, caf\u00e9"},
        },
        "dynamic_batching": {
            "max_queue_delay_microseconds": 100,
            "priority_queue_policy": {"1": {"timeout_action": "DELAY",
                                            "default_timeout_microseconds": 5}},
        },
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4],
                   "format": "FORMAT_NONE"}],
    }
    assert _from_pbtxt(to_pbtxt(config)) == _from_dict(config)


def test_enum_and_map_field_lists_cover_model_config():
    """Every enum and map field of ModelConfig is known, so the renderer handles all of them."""
    from google.protobuf.descriptor import FieldDescriptor

    enums, maps, seen = set(), set(), set()

    def walk(descriptor):
        if descriptor.full_name in seen:
            return
        seen.add(descriptor.full_name)
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_ENUM:
                enums.add(field.name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type.GetOptions().map_entry:
                    maps.add(field.name)
                walk(field.message_type)

    walk(model_config_pb2.ModelConfig.DESCRIPTOR)
    assert enums <= ENUM_FIELDS
    assert maps <= MAP_FIELDS


def test_reference_config_has_no_model_metrics():
    """The stack's Triton 2.51 (r24.10) has no ModelConfig.model_metrics: a config.pbtxt holding
    it fails to parse and a load-API override holding it is refused ("model_metrics: Cannot find
    field"), so the model would not load. Add the TTFT bucket override only with Triton >= 2.52."""
    assert "model_metrics" not in reference_model_config("m", PARAMS)


def test_pbtxt_renders_a_model_metrics_block():
    """For Triton >= 2.52: a model_metrics histogram override renders as valid text format."""
    config = reference_model_config("m", PARAMS)
    config["model_metrics"] = {"metric_control": [{
        "metric_identifier": {"family": "nv_inference_first_response_histogram_ms"},
        "histogram_options": {"buckets": [2.5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                                          10000, 30000]},
    }]}
    text = to_pbtxt(config)
    assert 'family: "nv_inference_first_response_histogram_ms"\n' in text
    message = _from_pbtxt(text)
    assert message == _from_dict(config)
    control = message.model_metrics.metric_control[0]
    assert list(control.histogram_options.buckets)[:2] == [2.5, 10.0]
