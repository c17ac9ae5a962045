"""The judge's settings: defaults from the runbook, each one overridable per release.

Validated eagerly with errors naming the field and the fix, before any traffic moves. Any
check can be switched off, but only with a reason, which the verdict then shows: a gate the
runtime cannot measure (GPU memory on a CPU stack) is disabled, never silently passed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from llm_release.analysis.sequential import RateTestSettings
from llm_release.errors import SpecError

#: Fixed-threshold and health gates (name -> what it reads).
GATES = {
    "error_rate": "the canary's error share (5xx, and 4xx above the baseline's) over a window, held over a duration",
    "latency_p95": "the canary's p95 gateway latency over a rolling window, held over a duration",
    "outage": "every canary request in a rolling window failed",
    "crash_loop": "the canary is not READY in Triton, or its pods restart",
    "probe_failures": "consecutive failed streaming probes of the canary",
    "gpu_headroom": "free GPU memory on the canary's GPUs, before traffic is raised",
    "ttft_p95": "the canary's p95 time to first token (streaming probe)",
    "itl_p95": "the canary's p95 inter-token latency (streaming probe)",
}
#: Canary-versus-baseline sequential comparisons (name -> what it counts).
COMPARISONS = {
    "compare_5xx": "5xx responses per request",
    "compare_4xx": "4xx responses (refusals) per request",
    "compare_latency_p50": "requests slower than the baseline's median (gateway histogram)",
    "compare_latency_p95": "requests slower than the baseline's p95 (gateway histogram)",
    "compare_ttft_p50": "probes whose time to first token exceeds the baseline's median",
    "compare_itl_p50": "probes whose mean inter-token latency exceeds the baseline's median",
}
CHECKS = {**GATES, **COMPARISONS}

DEFAULTS: dict[str, Any] = {
    # Sequential comparison: error chances per verdict, however often the judge is read.
    "alpha": 0.01,  # false rollback (split over the enabled comparisons)
    "beta": 0.01,  # missed regression
    "errors": {"ratio": 3.0, "increase": 0.01},  # regression: 3x the baseline, or +1 point
    # regression: the canary's latency is the baseline's times `slowdown` (what share of requests
    # that puts above a baseline quantile's bucket bound is read from the baseline's histogram),
    # and at least `increase` more of them above it; a slowdown also adds at least `min_added_ms`
    # (a 1.5x slower 4 ms answer is jitter on a shared host, not something a client notices)
    "latency": {"slowdown": 1.5, "increase": 0.02, "min_added_ms": 10.0},
    "min_requests_to_pass": 100,
    "min_requests_to_fail": 10,
    "min_baseline_requests": 20,
    "min_probes_to_pass": 10,
    "min_probes_to_fail": 3,
    # The runbook's rollback triggers.
    "gates": {
        # count_4xx: "excess" (4xx above the baseline's 4xx rate), "all" or "none"
        "error_rate": {"max": 0.05, "for_s": 300.0, "window_s": 60.0, "min_requests": 20, "count_4xx": "excess"},
        "latency_p95": {"max_ms": 6000.0, "for_s": 600.0, "window_s": 60.0, "min_requests": 20},
        "outage": {"window_s": 10.0, "min_requests": 5},
        "crash_loop": {"not_ready_for_s": 0.0, "max_restarts": 0},
        "probe_failures": {"max_consecutive": 3},
        "gpu_headroom": {"min_free": 0.10},
        "ttft_p95": {"max_ms": None, "window_s": 60.0},
        "itl_p95": {"max_ms": None, "window_s": 60.0},
    },
    # check name -> why it is off (shown in every verdict)
    "disabled": {},
}


@dataclass(frozen=True)
class JudgeConfig:
    """Validated settings. Build with `JudgeConfig.from_dict(overrides)`."""

    doc: dict

    @classmethod
    def from_dict(cls, overrides: dict | None = None) -> "JudgeConfig":
        doc = _merge(copy.deepcopy(DEFAULTS), overrides or {}, "analysis")
        _validate(doc)
        return cls(doc)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.doc)

    def gate(self, name: str) -> dict:
        return self.doc["gates"][name]

    def disabled_reason(self, name: str) -> str | None:
        reason = self.doc["disabled"].get(name)
        if reason:
            return reason
        if name in ("ttft_p95", "itl_p95") and self.gate(name)["max_ms"] is None:
            return f"no threshold set (gates.{name}.max_ms)"
        return None

    def enabled_comparisons(self) -> list[str]:
        return [name for name in COMPARISONS if not self.disabled_reason(name)]

    def rate_settings(self, name: str) -> RateTestSettings:
        """Settings of one comparison; alpha is split over the enabled comparisons (Bonferroni),
        so the chance of any false rollback stays within alpha; beta is per regression."""
        d = self.doc
        family = d["errors"] if name in ("compare_5xx", "compare_4xx") else d["latency"]
        probes = name in ("compare_ttft_p50", "compare_itl_p50")
        return RateTestSettings(
            alpha=d["alpha"] / max(1, len(self.enabled_comparisons())), beta=d["beta"],
            ratio=family.get("ratio", 1.0), increase=family["increase"],
            min_samples_to_pass=d["min_probes_to_pass"] if probes else d["min_requests_to_pass"],
            min_samples_to_fail=d["min_probes_to_fail"] if probes else d["min_requests_to_fail"],
            min_baseline_samples=d["min_probes_to_fail"] if probes else d["min_baseline_requests"])


def _merge(base: dict, overrides: dict, where: str) -> dict:
    if not isinstance(overrides, dict):
        raise SpecError(where, f"expected a mapping, got {type(overrides).__name__}", "give an object of settings")
    for key, value in overrides.items():
        path = f"{where}.{key}"
        if key not in base:
            raise SpecError(path, "is not a setting of the canary analysis",
                            f"use one of {sorted(base)}")
        if key == "disabled":
            if not isinstance(value, dict):
                raise SpecError(path, "expected check name -> reason", 'e.g. {"gpu_headroom": "CPU runtime"}')
            base[key] = dict(value)
        elif isinstance(base[key], dict):
            base[key] = _merge(base[key], value, path)
        else:
            base[key] = value
    return base


def _number(doc: dict, key: str, where: str, *, low: float, high: float = math.inf, open_low: bool = False,
            allow_none: bool = False):
    value = doc[key]
    path = f"{where}.{key}"
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SpecError(path, f"{value!r} is not a number", f"give a number from {low} to {high}")
    if value < low or value > high or (open_low and value == low):
        bound = f"above {low}" if open_low else f"at least {low}"
        raise SpecError(path, f"{value} is out of range", f"give a number {bound} and at most {high}")


def _validate(doc: dict) -> None:
    w = "analysis"
    _number(doc, "alpha", w, low=0, high=0.5, open_low=True)
    _number(doc, "beta", w, low=0, high=0.5, open_low=True)
    _number(doc["errors"], "ratio", f"{w}.errors", low=1, high=1000, open_low=True)
    _number(doc["latency"], "slowdown", f"{w}.latency", low=1, high=1000, open_low=True)
    _number(doc["latency"], "min_added_ms", f"{w}.latency", low=0, high=1e6)
    for family in ("errors", "latency"):
        _number(doc[family], "increase", f"{w}.{family}", low=0, high=0.5)
    for key in ("min_requests_to_pass", "min_requests_to_fail", "min_baseline_requests", "min_probes_to_pass",
                "min_probes_to_fail"):
        _number(doc, key, w, low=0, high=1e9)
    g = doc["gates"]
    gw = f"{w}.gates"
    _number(g["error_rate"], "max", f"{gw}.error_rate", low=0, high=1)
    _number(g["latency_p95"], "max_ms", f"{gw}.latency_p95", low=0, open_low=True)
    for name in ("ttft_p95", "itl_p95"):
        _number(g[name], "max_ms", f"{gw}.{name}", low=0, open_low=True, allow_none=True)
    for name in ("error_rate", "latency_p95", "outage", "ttft_p95", "itl_p95"):
        _number(g[name], "window_s", f"{gw}.{name}", low=0, open_low=True)
    for name in ("error_rate", "latency_p95"):
        _number(g[name], "for_s", f"{gw}.{name}", low=0)
    for name in ("error_rate", "latency_p95", "outage"):
        _number(g[name], "min_requests", f"{gw}.{name}", low=1)
    if g["error_rate"]["count_4xx"] not in ("excess", "all", "none"):
        raise SpecError(f"{gw}.error_rate.count_4xx", f"{g['error_rate']['count_4xx']!r} is not a choice",
                        'use "excess" (4xx above the baseline\'s rate), "all" or "none"')
    _number(g["crash_loop"], "not_ready_for_s", f"{gw}.crash_loop", low=0)
    _number(g["crash_loop"], "max_restarts", f"{gw}.crash_loop", low=0)
    _number(g["probe_failures"], "max_consecutive", f"{gw}.probe_failures", low=0)
    _number(g["gpu_headroom"], "min_free", f"{gw}.gpu_headroom", low=0, high=1)
    for name, reason in doc["disabled"].items():
        if name not in CHECKS:
            raise SpecError(f"{w}.disabled.{name}", "is not a check of the canary analysis",
                            f"use one of {sorted(CHECKS)}")
        if not isinstance(reason, str) or not reason.strip():
            raise SpecError(f"{w}.disabled.{name}", "a check is switched off only with a reason",
                            'say why, e.g. "CPU runtime: Triton reports no GPU memory"')
    if not any(name not in doc["disabled"] for name in CHECKS):
        raise SpecError(f"{w}.disabled", "every check is disabled", "leave at least the comparisons on")
