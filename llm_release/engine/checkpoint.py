"""Reference checkpoints: small, deterministic byte-level transformers derived from a corpus.

A checkpoint is what the TensorRT-LLM path calls a converted checkpoint: `config.json`
(architecture) and `weights.npz` (fp32). Random weights alone generate noise, so two parts are
derived cheaply from a small English corpus shipped with the package: a bigram log-probability
table (added to the logits, keyed on the previous byte) and the unembedding, fitted in closed
form (ridge regression) to the random transformer's hidden states. That takes well under a
second and makes generations look like the corpus, while the seed still changes every weight
and so the text.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from llm_release.engine.runtime import VOCAB_SIZE, ReferenceLM
from llm_release.errors import SpecError

CORPUS_PATH = Path(__file__).parent / "corpus" / "reference.txt"
ARCHITECTURE = "ReferenceLM"
_CHUNK = 128          # corpus tokens per forward pass when fitting the readout
_RIDGE = 1e-2         # ridge penalty of the readout fit
_READOUT_GAIN = 15.0  # weight of the fitted readout against the bigram table
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive with fixed timestamps and order, so equal arrays give equal bytes.

    np.savez stamps each member with the current time, which would make every build differ.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]),
                                      allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name + ".npy", date_time=_ZIP_EPOCH),
                             member.getvalue())
    return buf.getvalue()


def _round(array: np.ndarray) -> np.ndarray:
    """Round derived weights to 1e-4 so last-bit differences between CPUs' math libraries
    (vectorized log, BLAS summation order) do not change the checkpoint's bytes."""
    return np.round(array, 4).astype(np.float32)


def bigram_log_probs(corpus: bytes) -> np.ndarray:
    """log P(next byte | previous byte) with add-0.1 smoothing: (prev, next) -> log prob."""
    counts = np.full((VOCAB_SIZE, VOCAB_SIZE), 0.1, dtype=np.float64)
    data = np.frombuffer(corpus, dtype=np.uint8).astype(np.int64)
    np.add.at(counts, (data[:-1], data[1:]), 1.0)
    return _round(np.log(counts / counts.sum(axis=1, keepdims=True)))


def _random_weights(rng: np.random.Generator, d_model: int, n_layers: int) -> dict:
    d_ff = 4 * d_model
    std = 1.0 / np.sqrt(d_model)
    residual_std = std / np.sqrt(2 * n_layers)

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    weights = {"tok_emb": normal((VOCAB_SIZE, d_model), 1.0)}
    for layer in range(n_layers):
        p = f"layers.{layer}."
        weights.update({
            p + "ln1.gain": np.ones(d_model, np.float32),
            p + "ln1.bias": np.zeros(d_model, np.float32),
            p + "attn.qkv.weight": normal((3 * d_model, d_model), std),
            p + "attn.qkv.bias": np.zeros(3 * d_model, np.float32),
            p + "attn.out.weight": normal((d_model, d_model), residual_std),
            p + "attn.out.bias": np.zeros(d_model, np.float32),
            p + "ln2.gain": np.ones(d_model, np.float32),
            p + "ln2.bias": np.zeros(d_model, np.float32),
            p + "mlp.up.weight": normal((d_ff, d_model), std),
            p + "mlp.up.bias": np.zeros(d_ff, np.float32),
            p + "mlp.down.weight": normal((d_model, d_ff), residual_std / 2),
            p + "mlp.down.bias": np.zeros(d_model, np.float32),
        })
    weights["ln_f.gain"] = np.ones(d_model, np.float32)
    weights["ln_f.bias"] = np.zeros(d_model, np.float32)
    return weights


def _fit_readout(config: dict, weights: dict, corpus: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Unembedding (weight, bias) fitted so hidden states predict what the bigram misses."""
    d_model = config["d_model"]
    model = ReferenceLM(config, {**weights,
                                 "unembed.weight": np.zeros((VOCAB_SIZE, d_model), np.float32),
                                 "unembed.bias": np.zeros(VOCAB_SIZE, np.float32)},
                        max_input_len=_CHUNK, max_seq_len=_CHUNK + 1)
    data = np.frombuffer(corpus, dtype=np.uint8).astype(np.int64)
    features, prev, nxt = [], [], []
    for start in range(0, len(data) - 1, _CHUNK):
        chunk = data[start:start + _CHUNK + 1]
        features.append(model.hidden_states(chunk[:-1], 0, model.new_cache(len(chunk) - 1)))
        prev.append(chunk[:-1])
        nxt.append(chunk[1:])
    h = np.concatenate(features).astype(np.float64)
    h = np.concatenate([h, np.ones((len(h), 1))], axis=1)
    prev, nxt = np.concatenate(prev), np.concatenate(nxt)
    bigram_probs = np.exp(weights["bigram"].astype(np.float64))[prev]
    target = np.eye(VOCAB_SIZE)[nxt] - bigram_probs
    solution = np.linalg.solve(h.T @ h + _RIDGE * len(h) * np.eye(h.shape[1]), h.T @ target)
    readout = _READOUT_GAIN * solution
    return _round(readout[:-1].T), _round(readout[-1])


def reference_weights(config: dict, corpus: bytes) -> dict[str, np.ndarray]:
    """All fp32 weights of a reference checkpoint, a pure function of config and corpus."""
    rng = np.random.default_rng(config["seed"])
    weights = _random_weights(rng, config["d_model"], config["n_layers"])
    weights["bigram"] = bigram_log_probs(corpus)
    weights["unembed.weight"], weights["unembed.bias"] = _fit_readout(config, weights, corpus)
    return weights


def _check_shape_args(seed: int, d_model: int, n_layers: int, n_heads: int) -> None:
    for field, value, minimum in (("seed", seed, 0), ("d_model", d_model, 2),
                                  ("n_layers", n_layers, 1), ("n_heads", n_heads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(field, f"{value!r} is not an integer >= {minimum}",
                            f"pass an integer >= {minimum}")
    if d_model % 2:
        raise SpecError("d_model", f"{d_model} must be even for sinusoidal positions",
                        "use an even d_model")
    if d_model % n_heads:
        raise SpecError("n_heads", f"{n_heads} does not divide d_model {d_model}",
                        "choose n_heads dividing d_model")


def make_reference_checkpoint(out_dir, *, seed: int = 0, d_model: int = 64, n_layers: int = 2,
                              n_heads: int = 4) -> Path:
    """Write a reference checkpoint (config.json + fp32 weights.npz) into out_dir.

    Same arguments give byte-identical files; different seeds give different weights and text.
    """
    _check_shape_args(seed, d_model, n_layers, n_heads)
    corpus = CORPUS_PATH.read_bytes()
    config = {
        "architecture": ARCHITECTURE,
        "vocab_size": VOCAB_SIZE,
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "d_ff": 4 * d_model,
        "positions": "sinusoidal",
        "alibi_slopes": [2.0 * 0.5 ** head for head in range(n_heads)],
        "dtype": "float32",
        "seed": seed,
        "corpus_sha256": hashlib.sha256(corpus).hexdigest(),
    }
    weights = reference_weights(config, corpus)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
    (out / "weights.npz").write_bytes(npz_bytes(weights))
    return out


def checkpoint_digest(checkpoint_dir) -> str:
    """"sha256:<hex>" over the sorted relative file names and the contents of every file."""
    root = Path(checkpoint_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return "sha256:" + digest.hexdigest()


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The weight names and shapes a checkpoint of this architecture must hold."""
    d, d_ff, v = config["d_model"], config["d_ff"], config["vocab_size"]
    shapes = {"tok_emb": (v, d), "bigram": (v, v), "ln_f.gain": (d,), "ln_f.bias": (d,),
              "unembed.weight": (v, d), "unembed.bias": (v,)}
    for layer in range(config["n_layers"]):
        p = f"layers.{layer}."
        shapes.update({
            p + "ln1.gain": (d,), p + "ln1.bias": (d,), p + "ln2.gain": (d,),
            p + "ln2.bias": (d,), p + "attn.qkv.weight": (3 * d, d),
            p + "attn.qkv.bias": (3 * d,), p + "attn.out.weight": (d, d),
            p + "attn.out.bias": (d,), p + "mlp.up.weight": (d_ff, d),
            p + "mlp.up.bias": (d_ff,), p + "mlp.down.weight": (d, d_ff),
            p + "mlp.down.bias": (d,),
        })
    return shapes


def read_checkpoint(checkpoint_dir) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Load and check a checkpoint, raising SpecError("checkpoint_dir", ...) on any defect."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise SpecError("checkpoint_dir", f"{root} is not a directory",
                        "point it at a checkpoint with config.json and weights.npz")
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        with np.load(root / "weights.npz", allow_pickle=False) as npz:
            weights = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SpecError("checkpoint_dir", f"cannot read the checkpoint in {root}: {exc}",
                        "rebuild or re-download the checkpoint") from exc
    _check_config(root, config)
    _check_weights(root, config, weights)
    return config, weights


def _check_config(root: Path, config: Any) -> None:
    if not isinstance(config, dict) or config.get("architecture") != ARCHITECTURE:
        raise SpecError("checkpoint_dir", f"{root}/config.json is not a {ARCHITECTURE} config",
                        "use a checkpoint made by make_reference_checkpoint")
    for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError("checkpoint_dir", f"{root}/config.json: {key} is {value!r}, "
                            "not a positive integer", "fix or regenerate the checkpoint")
    d_model, n_heads = config["d_model"], config["n_heads"]
    slopes = config.get("alibi_slopes")
    if not isinstance(slopes, list) or len(slopes) != n_heads or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0 for s in slopes):
        raise SpecError("checkpoint_dir", f"{root}/config.json: alibi_slopes must list "
                        f"{n_heads} non-negative numbers", "fix or regenerate the checkpoint")
    if config["vocab_size"] != VOCAB_SIZE or d_model % 2 or d_model % n_heads:
        raise SpecError("checkpoint_dir", f"{root}/config.json: vocab_size must be "
                        f"{VOCAB_SIZE} and d_model even and divisible by n_heads",
                        "fix or regenerate the checkpoint")


def _check_weights(root: Path, config: dict, weights: dict[str, np.ndarray]) -> None:
    expected = expected_shapes(config)
    if set(weights) != set(expected):
        odd = sorted(set(weights) ^ set(expected))
        raise SpecError("checkpoint_dir", f"{root}/weights.npz has missing or unexpected "
                        f"weights: {', '.join(odd[:5])}", "regenerate the checkpoint")
    for name, shape in expected.items():
        array = weights[name]
        if array.shape != shape or array.dtype != np.float32 or not np.isfinite(array).all():
            raise SpecError("checkpoint_dir", f"{root}/weights.npz: {name} is {array.dtype} "
                            f"{array.shape}, expected finite float32 {shape}",
                            "regenerate the checkpoint")
