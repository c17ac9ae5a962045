"""Triton Python-backend model serving one reference engine version.

It takes the inputs of the TensorRT-LLM ensemble (text_input, max_tokens, stream, sampling
settings, stop_words) and answers with `text_output`, so clients, golden prompts and the perf
bench treat it like a TensorRT-LLM deployment. The model is decoupled, as TensorRT-LLM's
streaming models are: with `stream` true it sends one response per generated token and then an
empty final one; otherwise exactly one response (Triton's HTTP /generate requires that).

The engine lives in this version's directory (`<version>/engine`), and its `runtime.py` is
loaded from there by file path, so each version runs the code it was built with and the
server needs no llm_release installation. Nothing here raises out of `execute`: a bad request
gets an error response with the final flag, and the stub keeps serving.
"""

import hashlib
import importlib.util
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _require_numpy_1():
    """Fail the load, not every request, when the stub imported numpy 2.

    The stub embeds CPython in isolated mode (PYTHONPATH is ignored) and was built for numpy 1:
    with a numpy 2 from the base interpreter's site-packages, each BYTES input tensor arrives
    as garbage and the stub aborts in deserialize_bytes_tensor (seen with Triton 2.51 from the
    nvidia-pytriton wheel), while health endpoints still answer 200.
    """
    if int(np.__version__.split(".")[0]) >= 2:
        raise pb_utils.TritonModelException(
            f"numpy {np.__version__} from {os.path.dirname(np.__file__)} was loaded by the "
            "Python backend stub, which corrupts string tensors with numpy 2; start "
            "tritonserver with the bin directory of an environment holding numpy 1.x first on "
            "PATH (the stub finds its Python prefix through PATH, not PYTHONPATH)")


def _load_runtime(engine_dir):
    """Import the engine's runtime.py under a name unique to its path (one per version)."""
    path = os.path.join(engine_dir, "runtime.py")
    name = "reference_runtime_" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Log:
    """pb_utils.Logger when the stub has it (Triton >= 23.04), print otherwise."""

    def __init__(self, prefix):
        self._prefix = prefix
        self._logger = getattr(pb_utils, "Logger", None)

    def info(self, message):
        self._emit("log_info", message)

    def error(self, message):
        self._emit("log_error", message)

    def _emit(self, level, message):
        text = f"{self._prefix}: {message}"
        if self._logger is not None:
            getattr(self._logger, level)(text)
        else:
            print(text, flush=True)


class TritonPythonModel:
    """Reference LLM engine behind the TensorRT-LLM ensemble's interface."""

    def initialize(self, args):
        _require_numpy_1()
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "model_transaction_policy: this model streams tokens and must be decoupled; "
                "set model_transaction_policy { decoupled: true } in config.pbtxt")
        version = args["model_version"]
        engine_dir = os.path.join(args["model_repository"], version, "engine")
        self._log = _Log(f"{args['model_name']} v{version}")
        self._engine = _load_runtime(engine_dir).ReferenceLM.load(engine_dir)
        self._log.info(f"loaded engine from {engine_dir} "
                       f"(max_input_len {self._engine.max_input_len}, "
                       f"max_seq_len {self._engine.max_seq_len})")

    def execute(self, requests):
        for request in requests:
            self._serve(request)
        return None

    def finalize(self):
        self._engine = None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            rows, stream = _parse_request(request)
            if stream:
                self._stream(rows[0], sender)
            else:
                texts = ["".join(self._engine.generate(**row)) for row in rows]
                sender.send(_text_response(texts), flags=_FINAL)
        except ValueError as exc:
            sender.send(_error_response(str(exc)), flags=_FINAL)
        except Exception as exc:  # noqa: BLE001 - a stub must answer, never die on a request
            self._log.error(f"request failed: {exc!r}")
            sender.send(_error_response(f"internal error: {exc!r}"), flags=_FINAL)

    def _stream(self, row, sender):
        """One response per token, then an empty final one; stop early if the client left."""
        for piece in self._engine.generate(**row):
            if sender.is_cancelled():
                break
            sender.send(_text_response([piece]))
        sender.send(flags=_FINAL)


def _text_response(texts):
    output = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", output)])


def _error_response(message):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


def _parse_request(request):
    """Per-row generate() arguments and the stream flag, or ValueError naming the input."""
    prompts = _input(request, "text_input")
    if prompts is None:
        raise ValueError("text_input: is required")
    batch = prompts.shape[0] if prompts.ndim > 1 else 1
    stream = bool(_scalar(request, "stream", 0, batch, False))
    if stream and batch > 1:
        raise ValueError(f"stream: streaming takes one prompt per request, got {batch}; "
                         "send one request per prompt")
    stop_words = _stop_words(request, batch)
    rows = []
    for row, prompt in enumerate(prompts.reshape(batch, -1)[:, 0]):
        rows.append({
            "prompt": _text("text_input", prompt),
            "max_tokens": int(_scalar(request, "max_tokens", row, batch, None)),
            "temperature": float(_scalar(request, "temperature", row, batch, 0.0)),
            "top_k": int(_scalar(request, "top_k", row, batch, 0)),
            "top_p": float(_scalar(request, "top_p", row, batch, 1.0)),
            "seed": int(_scalar(request, "random_seed", row, batch, 0)),
            "stop_words": stop_words[row],
        })
    return rows, stream


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar(request, name, row, batch, default):
    """One value per batch row (a single value applies to all rows)."""
    array = _input(request, name)
    if array is None:
        if default is None:
            raise ValueError(f"{name}: is required")
        return default
    values = array.reshape(-1)
    if values.size not in (1, batch):
        raise ValueError(f"{name}: expected one value per prompt ({batch}), got {values.size}")
    return values[row if values.size == batch else 0]


def _stop_words(request, batch):
    """stop_words as a list per row: [batch, n] gives one list per row, a flat list all rows."""
    array = _input(request, "stop_words")
    if array is None:
        return [[] for _ in range(batch)]
    if array.ndim > 1 and array.shape[0] == batch:
        return [[_text("stop_words", w) for w in row.reshape(-1)] for row in array]
    words = [_text("stop_words", w) for w in array.reshape(-1)]
    return [words for _ in range(batch)]


def _text(name, value):
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: is not valid UTF-8 ({exc})") from None
