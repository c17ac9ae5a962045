"""Triton Python-backend model: the reference engine's production model, with injected faults.

For tests and benchmarks only: llm_release.engine.faults installs it as a version's `model.py`,
with the production `model.py` beside it as `reference_model.py` and the fault settings in
`faults.json`. Everything a request gets that is not a fault comes from the production model
(loaded by file path, like the engine's runtime), so a request that draws no fault is answered
exactly as production answers it, and production's model.py stays free of fault logic.

Per request, once the onset has passed (faults.py documents each setting):
- wait `added_latency_ms` (before any answer, failed ones included);
- one uniform draw decides: below `error_rate` a server error (TritonError INTERNAL), then up
  to `error_rate + refuse_rate` a refusal (INVALID_ARG), else a normal answer whose generation
  is stretched by `slow_factor`.
Triton 2.51's HTTP generate endpoints answer both errors with status 400; gRPC clients and
Triton releases that map error codes to statuses can tell them apart by code.

The draws come from one generator per instance, seeded with `seed` and the instance name, so a
run is reproducible while several instances do not fail in lockstep.
"""

import hashlib
import importlib.util
import json
import math
import os
import random
import time

import triton_python_backend_utils as pb_utils

REFERENCE_MODEL_FILE = "reference_model.py"
FAULTS_FILE = "faults.json"
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_DEFAULTS = {"error_rate": 0.0, "refuse_rate": 0.0, "added_latency_ms": 0.0, "slow_factor": 1.0,
             "onset_s": 0.0, "seed": 0}


def _load_reference(version_dir):
    """Import this version's copy of the production model under a name unique to its path."""
    path = os.path.abspath(os.path.join(version_dir, REFERENCE_MODEL_FILE))
    name = "reference_model_" + hashlib.sha256(path.encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read_faults(version_dir):
    """The settings of faults.json; a file we cannot trust fails the load, not the requests."""
    path = os.path.join(version_dir, FAULTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise pb_utils.TritonModelException(f"{path}: cannot read the fault settings: {exc}")
    unknown = sorted(set(data) - set(_DEFAULTS)) if isinstance(data, dict) else ["<not an object>"]
    if unknown:
        raise pb_utils.TritonModelException(f"{path}: unknown fault setting {unknown[0]}")
    faults = dict(_DEFAULTS, **data)
    for name, value in faults.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise pb_utils.TritonModelException(f"{path}: {name} {value!r} is not a number >= 0")
    if faults["error_rate"] + faults["refuse_rate"] > 1 or faults["slow_factor"] < 1:
        raise pb_utils.TritonModelException(f"{path}: rates must add up to 1 at most and "
                                            "slow_factor must be >= 1")
    return faults


def _error_response(message, code_name):
    """An error response with the given TritonError code, where this stub knows codes."""
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class _SlowEngine:
    """The engine with generation `factor` times as long: after computing each token (the
    first one includes the prompt), wait (factor - 1) times what it took."""

    def __init__(self, engine, factor):
        self._engine = engine
        self._factor = factor

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def generate(self, *args, **kwargs):
        # Called, not iterated, here: a bad request still fails before the first piece.
        return self._paced(self._engine.generate(*args, **kwargs))

    def _paced(self, pieces):
        pieces = iter(pieces)
        while True:
            started = time.perf_counter()
            try:
                piece = next(pieces)
            except StopIteration:
                return
            time.sleep((time.perf_counter() - started) * (self._factor - 1))
            yield piece


class TritonPythonModel:
    """The production reference model behind a fault injector."""

    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self._faults = _read_faults(version_dir)
        self._reference = _load_reference(version_dir).TritonPythonModel()
        self._reference.initialize(args)
        self._plain = self._reference._engine
        factor = self._faults["slow_factor"]
        self._slowed = _SlowEngine(self._plain, factor) if factor > 1 else self._plain
        self._rng = random.Random(f"{self._faults['seed']}/{args['model_instance_name']}")
        self._onset = time.monotonic() + self._faults["onset_s"]
        self._log = self._reference._log
        self._log.info(f"fault injection: {json.dumps(self._faults, sort_keys=True)}")

    def execute(self, requests):
        for request in requests:
            if time.monotonic() < self._onset:
                self._reference._engine = self._plain
                self._reference._serve(request)
            else:
                self._serve_with_faults(request)
        return None

    def finalize(self):
        self._reference.finalize()

    def _serve_with_faults(self, request):
        faults = self._faults
        draw = self._rng.random()
        if faults["added_latency_ms"] > 0:
            time.sleep(faults["added_latency_ms"] / 1000.0)
        if draw < faults["error_rate"]:
            self._fail(request, "internal error: injected fault (error_rate "
                                f"{faults['error_rate']:g})", "INTERNAL")
        elif draw < faults["error_rate"] + faults["refuse_rate"]:
            self._fail(request, "prompt rejected: injected refusal (refuse_rate "
                                f"{faults['refuse_rate']:g})", "INVALID_ARG")
        else:
            self._reference._engine = self._slowed
            self._reference._serve(request)

    def _fail(self, request, message, code_name):
        try:
            request.get_response_sender().send(_error_response(message, code_name), flags=_FINAL)
        except Exception as exc:  # noqa: BLE001 - a stub must answer, never die on a request
            self._log.error(f"could not send the injected error: {exc!r}")
