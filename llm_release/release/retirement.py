"""Retiring old versions of a model: which ones may go, and taking one out everywhere, safely.

The deprecation DAG is built on three functions here, none of which needs Airflow:

- `plan_retirement()` decides, from facts the caller gathered (installed versions, the routing
  the gateway serves, which versions other environments serve), which versions are kept and
  why, and which are retired (oldest first). Pure: no I/O.
- `traffic_in_window()` counts the requests the gateway sent to one version over a window,
  from Envoy's per-version cluster counters in Prometheus. No data is never read as zero.
- `retire_version()` retires one version in a fixed order, refusing while it has traffic:
  routing check, traffic in the window, the gateway forgets it, Triton unloads it, its
  directory leaves the model repository, and the artifact store (where it can delete).
  Every step is logged and returned; a retry skips what is already done and says so.

Rules (docs/deprecation.md has them with examples):
- the stable version (the largest weight of the routing; on a tie, the older) is never retired;
- nor is anything the routing gives traffic: weights, header routes or a mirror;
- nor the `keep_newest` newest installed versions, nor a version READY in another environment;
- a version is retired only after `zero_traffic_window_s` without a single request at the
  gateway (its own cluster and its shadow cluster), read from Prometheus, which must answer.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_release.analysis.signals import CLUSTER_LABEL, REQUESTS, _regex
from llm_release.errors import LLMReleaseError, MetricsError, SpecError
from llm_release.metadata import check_model_name, check_version
from llm_release.metrics.prometheus import PrometheusClient, counter_increase
from llm_release.model_repo import installed_versions, remove_version
from llm_release.routing.base import TrafficRouter
from llm_release.routing.envoy import cluster_name
from llm_release.routing.state import RoutingState
from llm_release.serving import ModelPerRelease, ServedVersions

LOG = logging.getLogger("llm_release.release.retirement")
# Prometheus answers at most 11,000 points per series; a longer window is read with a longer step.
MAX_POINTS = 10_000


@dataclass(frozen=True)
class RetentionPolicy:
    """What a model keeps: the `keep_newest` newest installed versions, and any version until it
    has had no request for `zero_traffic_window_s`. `remove_from_store` also deletes retired
    versions from the artifact store, where the store supports deletion."""

    keep_newest: int = 2
    zero_traffic_window_s: float = 3600.0
    remove_from_store: bool = False

    def __post_init__(self):
        if isinstance(self.keep_newest, bool) or not isinstance(self.keep_newest, int) or self.keep_newest < 1:
            raise SpecError("keep_newest", f"{self.keep_newest!r} is not a whole number >= 1",
                            "keep at least the newest version, e.g. 2")
        _window(self.zero_traffic_window_s, "zero_traffic_window_s")
        if not isinstance(self.remove_from_store, bool):
            raise SpecError("remove_from_store", f"{self.remove_from_store!r} is not true or false", "use a boolean")


@dataclass(frozen=True)
class RetirementPlan:
    model: str
    keep: dict[int, str]  # version -> why it is kept, e.g. "stable", "one of the 2 newest"
    retire: list[int]  # oldest first

    def to_dict(self) -> dict:
        return {"model": self.model, "keep": {str(v): why for v, why in sorted(self.keep.items())},
                "retire": list(self.retire)}


class RetirementRefused(LLMReleaseError):
    """A version may not be retired now: it has traffic, had some in the window, or is stable."""

    permanent = True


@dataclass(frozen=True)
class RetirementResult:
    model: str
    version: int
    steps: list[str] = field(default_factory=list)  # what was done (or skipped), in order
    requests_in_window: float = 0.0

    def to_dict(self) -> dict:
        return {"model": self.model, "version": self.version, "steps": list(self.steps),
                "requests_in_window": self.requests_in_window}


def _window(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(name, f"{value!r} is not a positive number of seconds", "e.g. 3600 for one hour")
    return float(value)


def stable_version(routing: RoutingState | None) -> int | None:
    """The version with the largest weight (on a tie, the older one); None without routing."""
    if routing is None or not routing.weights:
        return None
    return min(routing.weights, key=lambda v: (-routing.weights[v], v))


# -- the plan (pure) ----------------------------------------------------------------------------
def plan_retirement(model: str, *, installed: list[int], routing: RoutingState | None,
                    ready_elsewhere: dict[int, list[str]], policy: RetentionPolicy) -> RetirementPlan:
    """Which versions of `model` are kept (and why) and which are retired, oldest first.

    Kept: the stable version, any version the routing gives traffic (weights, header routes,
    mirror), the `policy.keep_newest` newest installed versions, and any version READY in
    another environment (`ready_elsewhere`: version -> environment names). A version kept
    for several reasons lists them all, separated by "; ". Everything else installed is
    retired. The plan does not look at past traffic: `retire_version` checks that per version.
    """
    model = check_model_name(model)
    if not isinstance(policy, RetentionPolicy):
        raise SpecError("policy", f"{policy!r} is not a RetentionPolicy", "build one with RetentionPolicy(...)")
    if not isinstance(installed, (list, tuple, set)):
        raise SpecError("installed", f"{installed!r} is not a list of versions", "e.g. [1, 2, 3]")
    versions = sorted({_checked(v, "installed") for v in installed})
    if routing is not None and routing.model != model:
        raise SpecError("routing", f"the routing given is {routing.model}'s, not {model}'s",
                        f"pass router.get_state({model!r})")
    elsewhere: dict[int, list[str]] = {}
    for version, environments in (ready_elsewhere or {}).items():
        if isinstance(environments, str) or not all(isinstance(e, str) for e in environments):
            raise SpecError("ready_elsewhere", f"v{version}: {environments!r} is not a list of environment names",
                            'e.g. {3: ["staging/eu"]}')
        if environments:
            elsewhere[_checked(version, "ready_elsewhere")] = list(environments)

    stable = stable_version(routing)
    routed = routing.versions if routing else set()
    newest = set(versions[-policy.keep_newest:])
    newest_why = "the newest" if policy.keep_newest == 1 else f"one of the {policy.keep_newest} newest"
    keep: dict[int, str] = {}
    for version in sorted(set(versions) | routed):
        reasons = []
        if version == stable:
            reasons.append("stable")
        elif version in routed:
            reasons.append("serving traffic")
        if version in newest:
            reasons.append(newest_why)
        if version in elsewhere:
            reasons.append(f"READY in {', '.join(elsewhere[version])}")
        if reasons:
            keep[version] = "; ".join(reasons)
    retire = [v for v in versions if v not in keep]
    return RetirementPlan(model, keep, retire)


def _checked(version, name: str) -> int:
    try:
        return check_version(version)
    except SpecError as exc:
        raise SpecError(name, exc.problem, exc.fix) from None


# -- traffic over a window ------------------------------------------------------------------------
TRITON_REQUESTS = "nv_inference_request_success|nv_inference_request_failure"
def traffic_in_window(prometheus: PrometheusClient, model: str, version: int, *, window_s: float,
                      at: float | None = None, step_s: float | None = None, triton_model: str | None = None,
                      triton_version: int | None = None) -> float:
    """Requests `version` received over the `window_s` seconds before `at` (now): the larger of
    what the gateway sent its clusters and what Triton counted for it (`triton_model` /
    `triton_version` where the release is a model of its own). Triton's count catches requests
    that reached the version without its cluster, e.g. through the gateway's pass-through for a
    version it never routed, or straight to Triton.

    Counted on both of its Envoy clusters, `<m>_v<N>` and the shadow `<m>_v<N>_shadow`, from
    `envoy_cluster_upstream_rq_total` sampled every `step_s` (1 s, or longer for windows over
    MAX_POINTS steps) and summed per series (several Envoy replicas are several series) with
    counter resets counted (a restarted Envoy counts from 0 again). A series without a sample at
    the window's start was created inside it, so all of its value counts. The window is rounded
    up to whole steps.

    Never reads "no data" as zero: an unreachable Prometheus, or one that answers but holds no
    Envoy request counters at all at the window's end (not scraping the gateway), raises
    MetricsError. Only when Prometheus answers and sees the gateway does a version without any
    series in the window count 0 (never routed, or forgotten before the window).

    Caveats: requests after the last scrape are not seen yet (wait a scrape interval after the
    last change before asking); with a step longer than the scrape interval, a reset inside one
    step loses what was counted in that step before the reset.
    """
    model = check_model_name(model)
    version = check_version(version)
    window_s = _window(window_s, "window_s")
    end = time.time() if at is None else float(at)
    step = _window(step_s, "step_s") if step_s is not None else max(1.0, window_s / MAX_POINTS)
    start = end - math.ceil(window_s / step - 1e-9) * step
    clusters = [cluster_name(model, version), cluster_name(model, version, shadow=True)]
    series = prometheus.query_range(f'{REQUESTS}{{{CLUSTER_LABEL}=~"{_regex(clusters)}"}}', start, end, step)
    if not series:
        if not prometheus.query_range(f"count({REQUESTS})", end, end, step):
            raise MetricsError(f"Prometheus at {prometheus.base_url} holds no Envoy request counters "
                               f"({REQUESTS}) at {end:.0f}: it does not scrape the gateway, so the traffic of "
                               f"{model} v{version} cannot be told; check its scrape configuration")
    triton = prometheus.query_range(
        f'{{__name__=~"{TRITON_REQUESTS}",model="{triton_model or model}",version="{triton_version or version}"}}',
        start, end, step)
    return max(_increase(series, start, step), _increase(triton, start, step))


def _increase(series, start: float, step: float) -> float:
    """Summed increase of counter series over the window (resets counted; a series created
    inside the window counts all of its value)."""
    total = 0.0
    for one in series:
        if not one.points:
            continue
        new_inside = min(t for t, _ in one.points) > start + step / 2
        total += counter_increase(one.points, from_zero=new_inside)
    return total


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:.1f}"


# -- retiring one version -------------------------------------------------------------------------
def retire_version(model: str, version: int, *, router: TrafficRouter, served: ServedVersions,
                   model_repository: Path | None, prometheus: PrometheusClient, window_s: float,
                   store=None, log: logging.Logger = LOG) -> RetirementResult:
    """Take `version` of `model` out of the gateway, Triton, the model repository (and the store).

    Refused (RetirementRefused, permanent) when the routing gives it traffic now, when it is
    the stable version, or when it took any request in the last `window_s` seconds, at the
    gateway or in Triton (the message has the count). Then, in order: the router forgets it, Triton unloads
    it, its directory is removed from `model_repository` (when given), and the artifact store
    deletes it when a store is given and has a `delete_version(model, version)` method (none of
    the current stores has; the version is then kept there, and the step says so). Each step
    is logged and listed in the result; a retry skips what is already done and says so.
    """
    model = check_model_name(model)
    version = check_version(version)
    window_s = _window(window_s, "window_s")
    steps: list[str] = []

    def done(text: str) -> None:
        steps.append(text)
        log.info("%s v%d: %s", model, version, text)

    routing = router.get_state(model)
    if routing is not None and version == stable_version(routing):
        raise RetirementRefused(f"{model} v{version} is the stable version (routing: {routing.describe()}); "
                                "switch traffic to another version first")
    if routing is not None and version in routing.versions:
        raise RetirementRefused(f"{model} v{version} still receives traffic (routing: {routing.describe()}); "
                                "move its traffic away first")
    triton_model, triton_version = _repository_entry(served, model, version)
    requests = traffic_in_window(prometheus, model, version, window_s=window_s, triton_model=triton_model,
                                 triton_version=triton_version)
    if requests > 0:
        clusters = f"{cluster_name(model, version)}, {cluster_name(model, version, shadow=True)}"
        raise RetirementRefused(f"{model} v{version} took {_count(requests)} requests in the last {window_s:g} s "
                                f"(gateway clusters {clusters}, Triton {triton_model} v{triton_version}); "
                                f"retire it once it has had none for {window_s:g} s")
    done(f"traffic: no requests in the last {window_s:g} s")

    if version in router.known_versions(model):
        now = router.forget(model, version)
        done(f"gateway: forgot it (routing unchanged: {now.describe() if now else 'none'})")
    else:
        done("gateway: already forgotten, skipped")

    if version in served.ready_versions(model):
        ready = served.unload(model, version)
        done(f"triton: unloaded (READY now: {ready})")
    else:
        done("triton: not loaded, skipped")

    if model_repository is None:
        done("model repository: not given, left as is")
    else:
        name, number = _repository_entry(served, model, version)
        path = Path(model_repository) / name / str(number)
        if number in installed_versions(model_repository, name):
            remove_version(model_repository, name, number)
            done(f"model repository: removed {path}")
        else:
            done(f"model repository: {path} already absent, skipped")

    delete = getattr(store, "delete_version", None) if store is not None else None
    if store is None:
        done("artifact store: kept (not asked to remove it)")
    elif callable(delete):
        delete(model, version)
        done(f"artifact store: deleted from {store.describe()}")
    else:
        done("artifact store: kept (no delete support)")
    return RetirementResult(model, version, steps, requests)


def _repository_entry(served: ServedVersions, model: str, version: int) -> tuple[str, int]:
    """The model directory and version number a release version has in the model repository."""
    if isinstance(served, ModelPerRelease):
        return served.name(model, version), 1  # release N is its own model, version 1
    return model, version
