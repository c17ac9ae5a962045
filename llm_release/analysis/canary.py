"""Canary analysis of one release step, live: read the gateway, probe, ask the judge.

`CanaryAnalysis.poll()` is one look: it reads the gateway's per-version counts since the last
look (llm_release.analysis.signals), adds the streaming probes and the candidate's readiness
taken now, and feeds the judge interval by interval. Callers poll it: the Airflow trigger
every second or so, the poke-mode sensor and `llm-release analyze` by replaying a step from
its start. `StepWatch` turns verdicts into what a release step does next: keep soaking,
pass, fail at once, or give up when the evidence stays inconclusive for too long.

No Airflow here; what a look needs from outside (probes, readiness, GPU memory) is passed in
as plain callables, so the same runner serves Envoy on the local stack and other runtimes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from llm_release.analysis.judge import CanaryJudge
from llm_release.analysis.samples import Health, ProbeResult
from llm_release.analysis.verdict import Outcome, Verdict
from llm_release.errors import SpecError
from llm_release.fsutil import write_atomically

LOG = logging.getLogger("llm_release.analysis")

#: Intervals read per range query (Prometheus refuses more than 11,000 points per series).
MAX_STEPS_PER_QUERY = 3600

Prober = Callable[[], tuple[tuple[ProbeResult, ...], tuple[ProbeResult, ...]]]


class CanaryAnalysis:
    """Feeds one judge from the gateway, the probe and the runtime, one look at a time.

    :param signals: a GatewaySignals (or anything with `intervals(start, end, step_s)`).
    :param since: the step's start (seconds since the epoch): everything from there is judged.
    :param step_s: interval length; the scrape interval is the natural choice.
    :param lag_s: how far behind now a look reads, so the last interval has been scraped.
    :param prober: () -> (canary probes, baseline probes), called at each look.
    :param readiness: () -> the candidate is READY (True/False) or unknown (None).
    :param gpu_free: () -> free GPU memory fraction of the candidate's runtime, or None.
    """

    def __init__(self, signals, judge: CanaryJudge, *, since: float, step_s: float = 1.0, lag_s: float = 2.0,
                 prober: Prober | None = None, readiness: Callable[[], bool | None] | None = None,
                 gpu_free: Callable[[], float | None] | None = None, clock: Callable[[], float] = time.time):
        if step_s <= 0:
            raise SpecError("step_s", f"{step_s} is not a positive number of seconds", "use the scrape interval, e.g. 1")
        self.signals = signals
        self.judge = judge
        self.next_start = float(since)
        self.step_s = float(step_s)
        self.lag_s = float(lag_s)
        self.prober = prober
        self.readiness = readiness
        self.gpu_free = gpu_free
        self.clock = clock
        self._canary_probes: list[ProbeResult] = []
        self._baseline_probes: list[ProbeResult] = []
        self.verdict: Verdict | None = None

    def poll(self) -> Verdict | None:
        """One look; returns the verdict after it (None before the first whole interval)."""
        if self.prober is not None:
            canary, baseline = self.prober()
            self._canary_probes.extend(canary)
            self._baseline_probes.extend(baseline)
        health = Health(ready=_safe(self.readiness), gpu_free_fraction=_safe(self.gpu_free))
        end = self.clock() - self.lag_s
        intervals = []
        while end - self.next_start >= self.step_s:
            # Prometheus answers at most 11,000 points per series and query: a long history
            # (a restarted trigger, `analyze --since 6h`) is read in chunks.
            chunk_end = min(end, self.next_start + MAX_STEPS_PER_QUERY * self.step_s)
            chunk = self.signals.intervals(self.next_start, chunk_end, self.step_s)
            if not chunk:
                break
            intervals.extend(chunk)
            self.next_start = chunk[-1].end
        for i, interval in enumerate(intervals):
            if i == len(intervals) - 1:
                # What was measured now belongs to the newest interval.
                interval = replace(interval, canary_probes=tuple(self._canary_probes),
                                   baseline_probes=tuple(self._baseline_probes), health=health)
                self._canary_probes.clear()
                self._baseline_probes.clear()
            self.verdict = self.judge.observe(interval)
        return self.verdict


def _safe(read: Callable[[], object] | None):
    """A reading that cannot be taken is unknown (None), never a reason to stop judging."""
    if read is None:
        return None
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - any failure to read is "no data"
        LOG.warning("could not read %s: %s", getattr(read, "__name__", "a health signal"), exc)
        return None


@dataclass(frozen=True)
class StepWatch:
    """When a step's analysis is over.

    :param min_s: soak at least this long before a PASS ends the step (a FAIL ends it at once).
    :param max_s: the longest soak: still INCONCLUSIVE then, the step fails (design section 5).
    """

    min_s: float = 60.0
    max_s: float = 1800.0

    def __post_init__(self):
        if self.min_s < 0 or self.max_s <= 0 or self.min_s > self.max_s:
            raise SpecError("min_soak_s/max_soak_s", f"{self.min_s}/{self.max_s} is not a valid soak window",
                            "give 0 <= min_soak_s <= max_soak_s, e.g. 60 and 1800")

    def decide(self, verdict: Verdict | None, elapsed_s: float) -> str | None:
        """None to keep soaking, else "PASS", "FAIL" or "TIMEOUT" (inconclusive for max_s)."""
        if verdict is not None and verdict.outcome is Outcome.FAIL:
            return "FAIL"
        if verdict is not None and verdict.outcome is Outcome.PASS and elapsed_s >= self.min_s:
            return "PASS"
        if elapsed_s >= self.max_s:
            return "TIMEOUT"
        return None


def replay(signals, config, *, since: float, until: float, step_s: float = 1.0,
           readiness: Callable[[], bool | None] | None = None,
           gpu_free: Callable[[], float | None] | None = None) -> Verdict | None:
    """The verdict over [since, until] from the gateway's history (health read now, if given)."""
    analysis = CanaryAnalysis(signals, CanaryJudge(config), since=since, step_s=step_s, lag_s=0.0,
                              readiness=readiness, gpu_free=gpu_free, clock=lambda: until)
    return analysis.poll()


def write_verdict(directory: Path, name: str, verdict: Verdict, *, context: dict | None = None) -> Path:
    """Keep a verdict as files a person can open: `<name>.json` (numbers) and `<name>.txt` (table)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    doc = {**(context or {}), "verdict": verdict.to_dict()}
    write_atomically(directory / f"{name}.txt", verdict.table() + "\n")
    path = directory / f"{name}.json"
    write_atomically(path, json.dumps(doc, indent=2) + "\n")
    return path



@dataclass(frozen=True)
class CanaryTarget:
    """Where a canary step runs: which versions, and the endpoints that measure them.

    :param model: the model name clients use at the gateway.
    :param candidate: the version under analysis; `baseline`: the stable version it is held against.
    :param shadow: the candidate receives mirrored copies (counted on its shadow cluster).
    :param gateway_url: the gateway clients call; the probe goes through its pinned version path.
    :param triton_url: the Triton serving the candidate (readiness); `triton_model` if it differs.
    """

    model: str
    candidate: int
    baseline: int
    prometheus_url: str
    gateway_url: str | None = None
    triton_url: str | None = None
    triton_model: str | None = None
    triton_version: int | None = None  # the candidate's version in `triton_model` (model_per_release: 1)
    shadow: bool = False

    def __post_init__(self):
        if self.candidate == self.baseline:
            raise SpecError("candidate", f"the candidate and the baseline are both version {self.candidate}",
                            "compare the new version with the stable one")

    def unmeasured(self) -> dict[str, str]:
        """Checks this target cannot feed, with the reason (they are disabled, and say so)."""
        off = {}
        if not self.gateway_url:
            for name in ("probe_failures", "compare_ttft_p50", "compare_itl_p50", "ttft_p95", "itl_p95"):
                off[name] = "no gateway URL to send the streaming probe through"
        if not self.triton_url:
            off["crash_loop"] = "no Triton URL to read the candidate's readiness from"
        if self.shadow:
            # Mirrored copies reach Triton through one more Envoy hop (the shadow listener), so
            # their upstream time is not comparable with the primary's; the probe compares
            # time to first token on the same path for both versions instead.
            for name in ("compare_latency_p50", "compare_latency_p95"):
                off[name] = "shadow: mirrored copies pass one more gateway hop than the baseline's requests"
        return off


def gpu_free_fraction(client, *, instance_regex: str = ".*") -> float | None:
    """The smallest free share of GPU memory among Triton's GPUs (None: no GPU metrics)."""
    samples = client.query(f'min(1 - nv_gpu_memory_used_bytes{{instance=~"{instance_regex}"}} '
                           f'/ nv_gpu_memory_total_bytes{{instance=~"{instance_regex}"}})')
    return samples[0].value if samples else None


def build_analysis(target: CanaryTarget, config: dict | None = None, *, since: float, step_s: float = 1.0,
                   lag_s: float = 2.0, probes_per_look: int = 1, probe: bool = True,
                   clock: Callable[[], float] = time.time) -> CanaryAnalysis:
    """A CanaryAnalysis for `target` with its endpoints wired in (checks it cannot feed disabled)."""
    from llm_release.analysis.config import JudgeConfig
    from llm_release.analysis.probe import probe_versions
    from llm_release.analysis.signals import GatewaySignals
    from llm_release.metrics.prometheus import PrometheusClient
    from llm_release.triton_control import TritonControl

    overrides = dict(config or {})
    disabled = dict(target.unmeasured())
    if not probe:
        for name in ("probe_failures", "compare_ttft_p50", "compare_itl_p50", "ttft_p95", "itl_p95"):
            disabled.setdefault(name, "replaying history: streaming probes are taken live only")
    disabled.update(overrides.get("disabled") or {})
    overrides["disabled"] = disabled
    judge_config = JudgeConfig.from_dict(overrides)
    client = PrometheusClient(target.prometheus_url, timeout_s=max(1.0, min(5.0, step_s * 3)))
    signals = GatewaySignals(client, target.model, target.candidate, target.baseline, shadow=target.shadow)

    prober = None
    if probe and target.gateway_url:
        def prober():
            results = probe_versions(target.gateway_url, target.model, [target.candidate, target.baseline],
                                     count=probes_per_look)
            return tuple(results[target.candidate]), tuple(results[target.baseline])

    readiness = None
    if target.triton_url:
        triton = TritonControl(target.triton_url, timeout_s=5.0)

        def readiness():
            return triton.is_version_ready(target.triton_model or target.model, target.triton_version or target.candidate)

    gpu_free = None
    if not judge_config.disabled_reason("gpu_headroom"):
        def gpu_free():
            return gpu_free_fraction(client)

    return CanaryAnalysis(signals, CanaryJudge(judge_config), since=since, step_s=step_s, lag_s=lag_s,
                          prober=prober, readiness=readiness, gpu_free=gpu_free, clock=clock)
