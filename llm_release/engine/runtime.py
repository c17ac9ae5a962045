"""Runtime of the reference engine: a tiny byte-level causal transformer in numpy.

This file is copied into every engine directory and imported from there by the Triton model,
so a served engine never depends on the version of llm_release installed beside the server.
It must therefore import nothing but the standard library and numpy.

The weights are used in the precision they were stored in: fp16 engines run their matrix
products in float16, int8 engines dequantize int8 weights with their per-row scales, so engines
of one checkpoint built at different precisions give measurably different logits, as real
quantized engines do.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np

VOCAB_SIZE = 256
#: Tokens the model may generate: printable ASCII and newline, so every generated token is one
#: whole character and any split of the output into pieces is valid UTF-8.
GENERATABLE = np.array(list(range(32, 127)) + [10], dtype=np.int64)
_LN_EPS = 1e-5
_NEG_INF = np.float32(-1e30)


def sinusoidal_positions(positions: np.ndarray, d_model: int) -> np.ndarray:
    """Fixed position encodings: no learned table, so any max_seq_len needs no extra weights."""
    half = d_model // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LN_EPS) * gain + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


def load_weights(path: str) -> dict[str, np.ndarray]:
    """Read weights.npz as stored: int8 matrices come back dequantized with their row scales."""
    with np.load(path, allow_pickle=False) as npz:
        stored = {name: npz[name] for name in npz.files}
    weights = {}
    for name, array in stored.items():
        if name.endswith(".scale"):
            continue
        scale = stored.get(name + ".scale")
        if scale is not None:
            array = array.astype(np.float32) * scale[:, None]
        weights[name] = array
    return weights


class ReferenceLM:
    """A loaded engine: weights, architecture and the limits it was built for."""

    def __init__(self, pretrained: dict, weights: dict[str, np.ndarray], *,
                 max_input_len: int, max_seq_len: int, compute_dtype=np.float32):
        self.d_model = int(pretrained["d_model"])
        self.n_layers = int(pretrained["n_layers"])
        self.n_heads = int(pretrained["n_heads"])
        self.head_dim = self.d_model // self.n_heads
        self.max_input_len = int(max_input_len)
        self.max_seq_len = int(max_seq_len)
        self.compute_dtype = np.dtype(compute_dtype)
        self.alibi_slopes = np.asarray(pretrained["alibi_slopes"], dtype=np.float32)
        # Matrices are kept transposed (in, out) and contiguous, in the compute dtype.
        self._w = {name: self._prepare(name, array) for name, array in weights.items()}
        mask = np.full(VOCAB_SIZE, _NEG_INF, dtype=np.float32)
        mask[GENERATABLE] = 0.0
        self._generatable_mask = mask

    def _prepare(self, name: str, array: np.ndarray) -> np.ndarray:
        if name.endswith(".weight"):
            return np.ascontiguousarray(array.T.astype(self.compute_dtype))
        return np.ascontiguousarray(array.astype(np.float32))

    @classmethod
    def load(cls, engine_dir: str | os.PathLike) -> "ReferenceLM":
        """Load an engine directory written by the reference builder (config.json + weights.npz)."""
        engine_dir = os.fspath(engine_dir)
        with open(os.path.join(engine_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        build = config["build_config"]
        weights = load_weights(os.path.join(engine_dir, "weights.npz"))
        compute = np.float16 if build["precision"] == "fp16" else np.float32
        return cls(config["pretrained_config"], weights, max_input_len=build["max_input_len"],
                   max_seq_len=build["max_seq_len"], compute_dtype=compute)

    # -- tokens ---------------------------------------------------------------------------

    @staticmethod
    def tokenize(text: str) -> list[int]:
        """Byte-level: one token per UTF-8 byte."""
        return list(text.encode("utf-8"))

    @staticmethod
    def detokenize(tokens: list[int]) -> str:
        """Bytes back to text; a prompt's split multi-byte character shows as U+FFFD."""
        return bytes(tokens).decode("utf-8", errors="replace")

    # -- forward --------------------------------------------------------------------------

    def _matmul(self, x: np.ndarray, name: str) -> np.ndarray:
        """x @ W in the engine's compute precision; the result goes back to float32."""
        out = x.astype(self.compute_dtype, copy=False) @ self._w[name + ".weight"]
        return out.astype(np.float32, copy=False) + self._w[name + ".bias"]

    def new_cache(self, capacity: int) -> list[np.ndarray]:
        """Key/value cache for `capacity` positions: (2, heads, capacity, head_dim) per layer."""
        shape = (2, self.n_heads, capacity, self.head_dim)
        return [np.zeros(shape, dtype=np.float32) for _ in range(self.n_layers)]

    def hidden_states(self, tokens: np.ndarray, start: int, cache: list[np.ndarray]) -> np.ndarray:
        """Final normalized hidden states of `tokens` at positions start.., filling the cache."""
        n = len(tokens)
        x = self._w["tok_emb"][tokens] + sinusoidal_positions(np.arange(start, start + n),
                                                              self.d_model)
        end = start + n
        bias = self._attention_bias(start, end)
        for layer in range(self.n_layers):
            p = f"layers.{layer}."
            h = _layer_norm(x, self._w[p + "ln1.gain"], self._w[p + "ln1.bias"])
            qkv = self._matmul(h, p + "attn.qkv").reshape(n, 3, self.n_heads, self.head_dim)
            q, k, v = qkv.transpose(1, 2, 0, 3)
            kv = cache[layer]
            kv[0, :, start:end] = k
            kv[1, :, start:end] = v
            scores = q @ kv[0, :, :end].transpose(0, 2, 1) / np.sqrt(self.head_dim) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attn = scores / scores.sum(axis=-1, keepdims=True)
            heads = (attn @ kv[1, :, :end]).transpose(1, 0, 2).reshape(n, self.d_model)
            x = x + self._matmul(heads, p + "attn.out")
            h = _layer_norm(x, self._w[p + "ln2.gain"], self._w[p + "ln2.bias"])
            x = x + self._matmul(_gelu(self._matmul(h, p + "mlp.up")), p + "mlp.down")
        return _layer_norm(x, self._w["ln_f.gain"], self._w["ln_f.bias"])

    def _attention_bias(self, start: int, end: int) -> np.ndarray:
        """Causal mask plus an ALiBi recency penalty per head: (heads, end - start, end).

        The recency penalty keeps heads looking at the last few bytes, so the hidden states
        carry local context that the corpus-fitted readout can use.
        """
        distance = (np.arange(start, end)[:, None] - np.arange(end)[None, :]).astype(np.float32)
        causal = np.where(distance < 0, _NEG_INF, np.float32(0.0))
        return causal - self.alibi_slopes[:, None, None] * np.maximum(distance, 0)

    def logits(self, hidden: np.ndarray, prev_tokens: np.ndarray) -> np.ndarray:
        """Next-token logits: the transformer's readout plus the corpus bigram of the last token."""
        return self._matmul(hidden, "unembed") + self._w["bigram"][prev_tokens]

    def next_logits(self, tokens: list[int]) -> np.ndarray:
        """Logits after a whole token sequence (no cache kept): for tests and inspection."""
        ids = np.asarray(tokens, dtype=np.int64)
        hidden = self.hidden_states(ids, 0, self.new_cache(len(ids)))
        return self.logits(hidden[-1:], ids[-1:])[0]

    # -- generation -----------------------------------------------------------------------

    def generate(self, prompt: str, max_tokens: int, *, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop_words: list[str] | None = None) -> Iterator[str]:
        """Generate up to max_tokens tokens after prompt, yielding one text piece per token.

        Greedy when temperature is 0; otherwise samples with temperature, then top_k (0 = off),
        then top_p, from a generator seeded by `seed` (None means 0, as TensorRT-LLM does), so
        the same engine and inputs always give the same output. Generation stops after a stop
        word (which is yielded) or at max_seq_len tokens in all. Inputs are checked here, before
        the first piece, so a bad request fails at the call rather than mid-stream.
        """
        tokens = self._check_prompt(prompt)
        _check_sampling(max_tokens, temperature, top_k, top_p, seed)
        stops = [w for w in (stop_words or []) if w]
        budget = min(max_tokens, self.max_seq_len - len(tokens))
        rng = np.random.default_rng(0 if seed is None else seed) if temperature > 0 else None
        return self._decode(tokens, budget, temperature, top_k, top_p, rng, stops)

    def _check_prompt(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("prompt: must be a non-empty string")
        tokens = self.tokenize(prompt)
        if len(tokens) > self.max_input_len:
            raise ValueError(f"prompt: {len(tokens)} tokens is over max_input_len "
                             f"{self.max_input_len} of this engine; shorten the prompt")
        return tokens

    def _decode(self, tokens: list[int], budget: int, temperature: float, top_k: int,
                top_p: float, rng, stops: list[str]) -> Iterator[str]:
        cache = self.new_cache(len(tokens) + budget)
        ids = np.asarray(tokens, dtype=np.int64)
        hidden = self.hidden_states(ids, 0, cache)[-1:]
        position, text = len(tokens), ""
        tail = max((len(w) for w in stops), default=0)
        for step in range(budget):
            logits = self.logits(hidden, ids[-1:])[0] + self._generatable_mask
            token = _pick(logits, temperature, top_k, top_p, rng)
            piece = chr(token)
            yield piece
            text = (text + piece)[-tail:] if tail else ""
            if any(text.endswith(w) for w in stops) or step == budget - 1:
                return
            ids = np.array([token], dtype=np.int64)
            hidden = self.hidden_states(ids, position, cache)
            position += 1


def _check_sampling(max_tokens, temperature, top_k, top_p, seed) -> None:
    """Refuse sampling settings that have no meaning, naming the input."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)):
        raise ValueError(f"max_tokens: must be an integer, got {max_tokens!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens: must be >= 1, got {max_tokens}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature!r}")
    if top_k < 0:
        raise ValueError(f"top_k: must be >= 0 (0 turns it off), got {top_k!r}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p: must be in (0, 1], got {top_p!r}")
    if seed is not None and not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed: must be an unsigned 64-bit integer, got {seed!r}")


def _pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng) -> int:
    """Choose the next token: argmax when greedy, else filtered sampling in a fixed order."""
    if rng is None:
        return int(np.argmax(logits))
    order = np.argsort(-logits, kind="stable")
    if top_k:
        order = order[:top_k]
    scaled = logits[order].astype(np.float64) / temperature
    probs = np.exp(scaled - scaled[0])
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
    probs = probs[:keep] / probs[:keep].sum()
    choice = int(np.searchsorted(np.cumsum(probs), rng.random(), side="right"))
    return int(order[min(choice, keep - 1)])
