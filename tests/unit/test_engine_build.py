"""Reference engine: checkpoint, build, metadata, runtime and the Triton model (faked stub)."""

import ast
import importlib.util
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from llm_release.engine.builder import build_engine
from llm_release.engine.checkpoint import checkpoint_digest, make_reference_checkpoint
from llm_release.engine.params import BuildParams
from llm_release.engine.runtime import ReferenceLM
from llm_release.errors import ChecksumMismatch, SpecError
from llm_release.metadata import (EngineMetadata, read_metadata, sha256_file, verify_engine,
                                  write_metadata)
from llm_release.triton_config import reference_model_config

PARAMS = {"precision": "fp32", "max_batch_size": 4, "max_input_len": 32, "max_seq_len": 96}
CREATED = "2026-01-31T12:00:00Z"
PROMPTS = ["hello", "The release", "Model serving is", "A canary", "Tokens", "q", "xyz 123",
           "The gate reads the metrics", "When the error rate rises", "Please send"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_reference_checkpoint(tmp_path_factory.mktemp("ckpt") / "seed1", seed=1)


@pytest.fixture(scope="module")
def engines(checkpoint, tmp_path_factory):
    """One engine per precision from the same checkpoint."""
    root = tmp_path_factory.mktemp("engines")
    return {precision: _build(checkpoint, root / precision, precision=precision)
            for precision in ("fp32", "fp16", "int8")}


def _build(checkpoint, out, version=1, created_at=CREATED, **changes):
    build_engine(checkpoint, out, {**PARAMS, **changes}, model_name="reference_lm",
                 version=version, created_at=created_at)
    return out


def _text(engine_dir, prompt, max_tokens=24, **kwargs):
    return "".join(ReferenceLM.load(Path(engine_dir) / "engine").generate(prompt, max_tokens,
                                                                            **kwargs))


# -- checkpoint ---------------------------------------------------------------------------

def test_checkpoint_is_deterministic(tmp_path, checkpoint):
    again = make_reference_checkpoint(tmp_path / "again", seed=1)
    for name in ("config.json", "weights.npz"):
        assert (again / name).read_bytes() == (checkpoint / name).read_bytes()
    assert checkpoint_digest(again) == checkpoint_digest(checkpoint)
    assert checkpoint_digest(checkpoint).startswith("sha256:")


def test_seeds_give_different_weights_and_text(tmp_path, checkpoint):
    other = make_reference_checkpoint(tmp_path / "seed2", seed=2)
    assert checkpoint_digest(other) != checkpoint_digest(checkpoint)
    one, two = _build(checkpoint, tmp_path / "e1"), _build(other, tmp_path / "e2")
    assert [_text(one, p) for p in PROMPTS] != [_text(two, p) for p in PROMPTS]
    assert _text(one, "hello", 16) != _text(two, "hello", 16)


def test_checkpoint_is_fp32_and_text_like(tmp_path, checkpoint):
    with np.load(checkpoint / "weights.npz") as npz:
        assert {npz[name].dtype for name in npz.files} == {np.dtype(np.float32)}
    text = _text(_build(checkpoint, tmp_path / "e"), "The model", 60, temperature=0.8, seed=3)
    words = text.split()
    assert len(words) > 5 and sum(len(w) for w in words) / len(words) < 12


@pytest.mark.parametrize("kwargs, field", [({"seed": -1}, "seed"), ({"d_model": 63}, "d_model"),
                                           ({"n_heads": 5}, "n_heads"),
                                           ({"n_layers": True}, "n_layers")])
def test_checkpoint_arguments_checked(tmp_path, kwargs, field):
    with pytest.raises(SpecError) as err:
        make_reference_checkpoint(tmp_path / "c", **kwargs)
    assert err.value.field == field
    assert not (tmp_path / "c").exists()


# -- build: validation before any write ---------------------------------------------------

@pytest.mark.parametrize("params, field", [
    ({**PARAMS, "precision": "fp7"}, "precision"),
    ({**PARAMS, "max_batch_size": 0}, "max_batch_size"),
    ({**PARAMS, "max_seq_len": 32}, "max_seq_len"),
    ({**PARAMS, "max_beam_width": 2}, "max_beam_width"),
    ({**PARAMS, "max_batch_size": "8"}, "max_batch_size"),
    ({**PARAMS, "max_input_len": True}, "max_input_len"),
    ({**PARAMS, "tp_size": 2}, "tp_size"),
])
def test_bad_params_write_nothing(tmp_path, checkpoint, params, field):
    out = tmp_path / "builds" / "engine"
    with pytest.raises(SpecError) as err:
        build_engine(checkpoint, out, params, model_name="m", version=1)
    assert err.value.field == field
    assert not out.exists()
    assert not (tmp_path / "builds").exists()


@pytest.mark.parametrize("kwargs, field", [
    ({"model_name": "bad name"}, "model_name"),
    ({"model_name": ".hidden"}, "model_name"),
    ({"model_name": "m\n"}, "model_name"),
    ({"version": 0}, "version"),
    ({"version": True}, "version"),
    ({"version": "1"}, "version"),
    ({"created_at": "yesterday"}, "created_at"),
    ({"created_at": "2026-01-31T12:00:00+02:00"}, "created_at"),
])
def test_bad_identity_writes_nothing(tmp_path, checkpoint, kwargs, field):
    args = {"model_name": "m", "version": 1, **kwargs}
    with pytest.raises(SpecError) as err:
        build_engine(checkpoint, tmp_path / "out", PARAMS, **args)
    assert err.value.field == field
    assert os.listdir(tmp_path) == []


def test_missing_or_broken_checkpoint_writes_nothing(tmp_path, checkpoint):
    with pytest.raises(SpecError) as err:
        build_engine(tmp_path / "nope", tmp_path / "out", PARAMS, model_name="m", version=1)
    assert err.value.field == "checkpoint_dir"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.npz").write_bytes((checkpoint / "weights.npz").read_bytes())
    config = json.loads((checkpoint / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "d_model": 48}))
    with pytest.raises(SpecError, match="weights.npz"):
        build_engine(broken, tmp_path / "out", PARAMS, model_name="m", version=1)
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["broken"]


# -- build: layout, determinism, idempotence ----------------------------------------------

def test_engine_layout_and_metadata(engines, checkpoint):
    out = engines["int8"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["engine/config.json", "engine/runtime.py", "engine/weights.npz",
                     "metadata.json", "model.py", "triton_config.json"]
    meta = read_metadata(out)
    assert (meta.model, meta.version, meta.precision) == ("reference_lm", 1, "int8")
    assert (meta.max_batch_size, meta.max_input_len, meta.max_seq_len) == (4, 32, 96)
    assert (meta.tp_size, meta.pp_size, meta.gpu_arch) == (1, 1, "cpu")
    assert (meta.builder, meta.trtllm_version, meta.triton_image) == ("reference-numpy", None,
                                                                       None)
    assert meta.build_params == BuildParams.from_dict({**PARAMS, "precision": "int8"}).to_dict()
    assert meta.source_checkpoint_digest == checkpoint_digest(checkpoint)
    assert meta.created_at == CREATED
    assert set(meta.files) == set(files) - {"metadata.json"}
    for rel, digest in meta.files.items():
        assert sha256_file(out / rel) == digest
    triton = json.loads((out / "triton_config.json").read_text())
    assert triton == reference_model_config("reference_lm", BuildParams.from_dict(
        {**PARAMS, "precision": "int8"}))
    engine_config = json.loads((out / "engine" / "config.json").read_text())
    assert engine_config["build_config"]["precision"] == "int8"
    assert engine_config["build_config"]["max_seq_len"] == 96


def test_build_is_deterministic(tmp_path, checkpoint, engines):
    again = _build(checkpoint, tmp_path / "again", created_at=None)
    first, second = read_metadata(engines["fp32"]), read_metadata(again)
    assert first.files == second.files
    assert sha256_file(again / "engine/weights.npz") == sha256_file(
        engines["fp32"] / "engine/weights.npz")
    assert _text(again, "hello", 40) == _text(engines["fp32"], "hello", 40)


def test_identical_rebuild_is_a_no_op(tmp_path, checkpoint):
    out = _build(checkpoint, tmp_path / "e")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    meta = build_engine(checkpoint, out, PARAMS, model_name="reference_lm", version=1,
                        created_at="2030-01-01T00:00:00Z")
    assert meta.created_at == CREATED
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes
    assert os.listdir(tmp_path) == ["e"]


@pytest.mark.parametrize("changes", [{"precision": "fp16"}, {"version": 2}])
def test_different_build_into_existing_out_dir_refused(tmp_path, checkpoint, changes):
    out = _build(checkpoint, tmp_path / "e")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SpecError) as err:
        _build(checkpoint, out, **changes)
    assert err.value.field == "out_dir"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert os.listdir(tmp_path) == ["e"]


def test_out_dir_holding_something_else_refused(tmp_path, checkpoint):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine")
    with pytest.raises(SpecError) as err:
        _build(checkpoint, tmp_path / "e")
    assert err.value.field == "out_dir"
    assert os.listdir(tmp_path / "e") == ["notes.txt"]


# -- precision ----------------------------------------------------------------------------

def test_precision_changes_stored_dtypes(engines):
    def dtypes(precision):
        with np.load(engines[precision] / "engine" / "weights.npz") as npz:
            return {name: npz[name].dtype for name in npz.files}

    assert set(dtypes("fp32").values()) == {np.dtype(np.float32)}
    assert set(dtypes("fp16").values()) == {np.dtype(np.float16)}
    int8 = dtypes("int8")
    assert int8["layers.0.attn.qkv.weight"] == np.int8
    assert int8["layers.0.attn.qkv.weight.scale"] == np.float32
    assert int8["unembed.weight"] == np.int8 and int8["bigram"] == np.int8
    assert int8["ln_f.gain"] == np.float32
    sizes = {p: (engines[p] / "engine" / "weights.npz").stat().st_size for p in engines}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_int8_scales_are_per_row(engines):
    with np.load(engines["int8"] / "engine" / "weights.npz") as npz:
        weight, scale = npz["layers.0.mlp.up.weight"], npz["layers.0.mlp.up.weight.scale"]
    assert scale.shape == (weight.shape[0],)
    assert np.abs(weight).max(axis=1).max() == 127


def test_precision_changes_logits(engines):
    logits = {p: ReferenceLM.load(engines[p] / "engine").next_logits(
        ReferenceLM.tokenize("The model server")) for p in engines}
    assert logits["fp32"].dtype == np.float32
    for low in ("fp16", "int8"):
        difference = np.abs(logits[low] - logits["fp32"]).max()
        assert 0 < difference < 5
    assert np.abs(logits["int8"] - logits["fp32"]).max() > np.abs(
        logits["fp16"] - logits["fp32"]).max()


def test_fp16_engine_computes_in_float16(engines):
    model = ReferenceLM.load(engines["fp16"] / "engine")
    assert model.compute_dtype == np.float16
    assert model._w["layers.0.attn.qkv.weight"].dtype == np.float16


def test_int8_generates_different_text_than_fp32(engines):
    fp32 = [_text(engines["fp32"], p, 48) for p in PROMPTS]
    int8 = [_text(engines["int8"], p, 48) for p in PROMPTS]
    assert fp32 != int8


# -- metadata -----------------------------------------------------------------------------

def test_verify_passes_then_detects_tampering(tmp_path, checkpoint):
    out = _build(checkpoint, tmp_path / "e")
    assert verify_engine(out) == read_metadata(out)
    weights = out / "engine" / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="engine/weights.npz"):
        verify_engine(out)


def test_verify_detects_missing_and_extra_files(tmp_path, checkpoint):
    out = _build(checkpoint, tmp_path / "e")
    (out / "engine" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ChecksumMismatch, match="extra.bin: present but not listed"):
        verify_engine(out)
    (out / "engine" / "extra.bin").unlink()
    (out / "model.py").unlink()
    with pytest.raises(ChecksumMismatch, match="model.py: listed in metadata.json but missing"):
        verify_engine(out)


def test_verify_ignores_bytecode_caches(tmp_path, checkpoint):
    out = _build(checkpoint, tmp_path / "e")
    (out / "engine" / "__pycache__").mkdir()
    (out / "engine" / "__pycache__" / "runtime.cpython-311.pyc").write_bytes(b"\0")
    verify_engine(out)


@pytest.mark.parametrize("change, field", [
    ({"version": 0}, "version"), ({"version": "1"}, "version"), ({"model": ""}, "model"),
    ({"files": {"../x": "sha256:" + "0" * 64}}, "files"), ({"files": {"a": "md5:1"}}, "files"),
    ({"created_at": "31/01/2026"}, "created_at"), ({"source_checkpoint_digest": "x"},
                                                   "source_checkpoint_digest"),
    ({"max_seq_len": 8}, "max_seq_len"), ({"surprise": 1}, "surprise"),
])
def test_bad_metadata_names_the_field(tmp_path, engines, change, field):
    data = {**read_metadata(engines["fp32"]).to_dict(), **change}
    (tmp_path / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(SpecError) as err:
        read_metadata(tmp_path)
    assert err.value.field == field


def test_missing_metadata_field_named(tmp_path, engines):
    data = read_metadata(engines["fp32"]).to_dict()
    del data["gpu_arch"]
    (tmp_path / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(SpecError) as err:
        read_metadata(tmp_path)
    assert err.value.field == "gpu_arch"


def test_write_metadata_round_trips_and_leaves_no_temp(tmp_path, engines):
    meta = read_metadata(engines["fp16"])
    write_metadata(tmp_path, meta)
    assert os.listdir(tmp_path) == ["metadata.json"]
    assert read_metadata(tmp_path) == meta
    assert EngineMetadata.from_dict(meta.to_dict()) == meta


# -- runtime ------------------------------------------------------------------------------

def test_runtime_is_standalone():
    """runtime.py is copied into engines: it may import only the stdlib and numpy."""
    source = (Path(__file__).parents[2] / "llm_release" / "engine" / "runtime.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert "llm_release" not in imported
    assert imported - {"numpy"} <= set(sys.stdlib_module_names)


def test_engine_copy_of_runtime_loads_by_path(engines):
    path = engines["fp32"] / "engine" / "runtime.py"
    spec = importlib.util.spec_from_file_location("engine_runtime_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.ReferenceLM.load(engines["fp32"] / "engine")
    assert "".join(model.generate("hello", 20)) == _text(engines["fp32"], "hello", 20)


def test_generation_is_deterministic(engines):
    model = ReferenceLM.load(engines["fp32"] / "engine")
    assert list(model.generate("hello", 30)) == list(model.generate("hello", 30))
    sampled = [list(model.generate("hello", 30, temperature=0.9, top_k=20, top_p=0.9, seed=7))
               for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_sampling_settings_matter(engines):
    model = ReferenceLM.load(engines["fp32"] / "engine")

    def run(**kwargs):
        return "".join(model.generate("The release", 40, **kwargs))

    greedy = run()
    assert run(temperature=1.0, top_k=1, seed=5) == greedy
    assert run(temperature=1.0, seed=1) != run(temperature=1.0, seed=2)
    assert run(temperature=1.0) == run(temperature=1.0, seed=0)


def test_pieces_are_single_printable_characters(engines):
    pieces = list(ReferenceLM.load(engines["int8"] / "engine").generate(
        "caf\u00e9 \u2603", 60, temperature=1.5, seed=3))
    assert len(pieces) == 60
    assert all(len(p) == 1 and (p.isprintable() or p == "\n") and p.isascii() for p in pieces)


def test_prompt_over_max_input_len_refused(engines):
    model = ReferenceLM.load(engines["fp32"] / "engine")
    with pytest.raises(ValueError, match="max_input_len 32"):
        model.generate("x" * 33, 4)
    assert len(list(model.generate("x" * 32, 4))) == 4


@pytest.mark.parametrize("kwargs, name", [
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temperature"),
    ({"top_k": -1}, "top_k"), ({"top_p": 0.0}, "top_p"), ({"seed": -1}, "seed")])
def test_bad_generation_settings_refused(engines, kwargs, name):
    model = ReferenceLM.load(engines["fp32"] / "engine")
    with pytest.raises(ValueError, match=f"^{name}:"):
        model.generate("hello", **{"max_tokens": 4, **kwargs})


def test_generation_stops_at_max_seq_len(engines):
    model = ReferenceLM.load(engines["fp32"] / "engine")
    assert len(list(model.generate("x" * 30, 500))) == 96 - 30


def test_stop_words_end_generation(engines):
    model = ReferenceLM.load(engines["fp32"] / "engine")
    full = "".join(model.generate("The release", 60))
    word = full[10:13]
    stopped = "".join(model.generate("The release", 60, stop_words=[word]))
    assert stopped.endswith(word) and full.startswith(stopped)
    assert len(stopped) == full.index(word) + len(word)


def test_throughput_is_reported(engines, record_property):
    """Timing is recorded, never asserted (DESIGN section 7)."""
    for precision, engine in engines.items():
        model = ReferenceLM.load(engine / "engine")
        started = time.perf_counter()
        count = sum(1 for _ in model.generate("The model", 64))
        rate = count / (time.perf_counter() - started)
        record_property(f"tokens_per_s_{precision}", round(rate))


# -- Triton model (model.py) against a fake stub -----------------------------------------

class _Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.outputs, self.error = output_tensors or [], error


class _Error:
    def __init__(self, message):
        self._message = message

    def message(self):
        return self._message


class _Sender:
    def __init__(self):
        self.sent = []

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))

    def is_cancelled(self):
        return False


class _Request:
    def __init__(self, inputs):
        self.inputs = {k: _Tensor(k, v) for k, v in inputs.items()}
        self.sender = _Sender()

    def get_response_sender(self):
        return self.sender


def _fake_pb_utils():
    module = types.ModuleType("triton_python_backend_utils")
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    module.Tensor, module.InferenceResponse, module.TritonError = _Tensor, _Response, _Error
    module.TritonModelException = RuntimeError
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    module.using_decoupled_model_transaction_policy = (
        lambda config: config.get("model_transaction_policy", {}).get("decoupled", False))
    return module


@pytest.fixture
def triton_model(engines, tmp_path, monkeypatch):
    """model.py initialized as Triton would, from a version directory holding the engine."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    version_dir = tmp_path / "reference_lm" / "3"
    version_dir.mkdir(parents=True)
    for path in engines["fp32"].rglob("*"):
        if path.is_file():
            (version_dir / path.relative_to(engines["fp32"])).parent.mkdir(exist_ok=True)
            (version_dir / path.relative_to(engines["fp32"])).write_bytes(path.read_bytes())
    spec = importlib.util.spec_from_file_location("fake_triton_model", version_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = json.loads((version_dir / "triton_config.json").read_text())
    model.initialize({"model_config": json.dumps(config), "model_name": "reference_lm",
                      "model_repository": str(tmp_path / "reference_lm"), "model_version": "3"})
    return model


def _request(prompt="hello", max_tokens=16, **extra):
    inputs = {"text_input": np.array([[prompt.encode()]], dtype=object),
              "max_tokens": np.array([[max_tokens]], dtype=np.int32)}
    for name, value in extra.items():
        inputs[name] = value
    return _Request(inputs)


def _texts(sent):
    return [r.outputs[0].as_numpy() for r, _ in sent if r is not None and not r.error]


def test_model_non_streaming_sends_one_final_response(triton_model, engines):
    request = _request()
    assert triton_model.execute([request]) is None
    [(response, flags)] = request.sender.sent
    assert flags == 1 and response.error is None
    output = response.outputs[0].as_numpy()
    assert output.shape == (1, 1)
    assert output[0, 0].decode() == _text(engines["fp32"], "hello", 16)


def test_model_streams_one_response_per_token(triton_model):
    streamed = _request(stream=np.array([[True]]))
    whole = _request()
    triton_model.execute([streamed, whole])
    pieces = _texts(streamed.sender.sent)
    assert len(pieces) == 16 and all(p.shape == (1, 1) for p in pieces)
    assert [f for _, f in streamed.sender.sent] == [0] * 16 + [1]
    assert streamed.sender.sent[-1][0] is None
    assert b"".join(p[0, 0] for p in pieces) == _texts(whole.sender.sent)[0][0, 0]


def test_model_batch_rows_and_sampling_inputs(triton_model, engines):
    request = _Request({
        "text_input": np.array([[b"hello"], [b"The release"]], dtype=object),
        "max_tokens": np.array([[8], [12]], dtype=np.int32),
        "temperature": np.array([[0.0], [0.9]], dtype=np.float32),
        "random_seed": np.array([[0], [42]], dtype=np.uint64),
        "end_id": np.array([[2], [2]], dtype=np.int32)})
    triton_model.execute([request])
    [(response, flags)] = request.sender.sent
    output = response.outputs[0].as_numpy()
    assert flags == 1 and output.shape == (2, 1)
    assert output[0, 0].decode() == _text(engines["fp32"], "hello", 8)
    assert output[1, 0].decode() == _text(engines["fp32"], "The release", 12,
                                          temperature=np.float32(0.9), seed=42)


def test_model_stop_words(triton_model, engines):
    full = _text(engines["fp32"], "hello", 16)
    request = _request(stop_words=np.array([[full[4:6].encode()]], dtype=object))
    triton_model.execute([request])
    text = _texts(request.sender.sent)[0][0, 0].decode()
    assert text == full[:full.index(full[4:6]) + 2]


@pytest.mark.parametrize("request_args, message", [
    ({"max_tokens": 0}, "max_tokens: must be >= 1"),
    ({"prompt": ""}, "prompt: must be a non-empty string"),
    ({"prompt": "x" * 40}, "max_input_len 32"),
    ({"top_p": np.array([[1.5]], dtype=np.float32)}, "top_p:"),
])
def test_model_bad_input_gets_final_error_response(triton_model, request_args, message):
    request = _request(**request_args)
    triton_model.execute([request])
    [(response, flags)] = request.sender.sent
    assert flags == 1 and message in response.error.message()
    good = _request()
    triton_model.execute([good])
    assert good.sender.sent[0][0].error is None


def test_model_refuses_streaming_a_batch(triton_model):
    request = _Request({"text_input": np.array([[b"a"], [b"b"]], dtype=object),
                        "max_tokens": np.array([[4], [4]], dtype=np.int32),
                        "stream": np.array([[True], [True]])})
    triton_model.execute([request])
    [(response, flags)] = request.sender.sent
    assert flags == 1 and "stream:" in response.error.message()


def test_model_reports_unexpected_failures_as_errors(triton_model):
    request = _request()
    request.inputs["max_tokens"] = _Tensor("max_tokens", np.array([[object()]], dtype=object))
    triton_model.execute([request])
    [(response, flags)] = request.sender.sent
    assert flags == 1 and response.error is not None


def test_model_refuses_a_non_decoupled_config(engines, triton_model, tmp_path):
    config = json.loads((engines["fp32"] / "triton_config.json").read_text())
    config["model_transaction_policy"] = {"decoupled": False}
    with pytest.raises(RuntimeError, match="decoupled"):
        type(triton_model)().initialize({
            "model_config": json.dumps(config), "model_name": "reference_lm",
            "model_repository": str(tmp_path / "reference_lm"), "model_version": "3"})
