"""The local release rehearsal: every release step that exists so far, on the embedded stack.

Today: build two reference engines from two checkpoints, install them as versions 1 and 2,
load both beside each other in Triton, probe each, send traffic through the gateway at a
90/10 split, and read the split and per-version metrics back from Prometheus. Each step is
timed; the summary is printed and written as JSON beside the stack's state.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llm_release.errors import MetricsError
from llm_release.loadgen import send_generate_requests
from llm_release.metrics.prometheus import PrometheusClient
from llm_release.stack.local import LocalStack, gateway_router
from llm_release.stats import binomial_interval
from llm_release.triton_control import TritonControl

MODEL = "reference_lm"


@dataclass
class RehearsalConfig:
    state_dir: Path
    requests: int = 1000
    canary_weight: int = 10
    concurrency: int = 4
    model: str = MODEL
    keep_stack: bool = False
    engines: list[dict] = field(default_factory=lambda: [
        {"version": 1, "seed": 1, "precision": "fp32"},
        {"version": 2, "seed": 2, "precision": "fp16"},
    ])


def run_rehearsal(cfg: RehearsalConfig, log: Callable[[str], None] = print) -> dict:
    from llm_release.engine.builder import build_engine
    from llm_release.engine.checkpoint import make_reference_checkpoint
    from llm_release.model_repo import install_version

    stack = LocalStack(cfg.state_dir)
    summary: dict = {"model": cfg.model, "steps": []}
    work = Path(cfg.state_dir)  # checkpoints and engines sit beside the stack's own state

    def step(name: str, fn):
        log(f"==> {name}")
        started = time.perf_counter()
        value = fn()
        took = round(time.perf_counter() - started, 3)
        summary["steps"].append({"step": name, "seconds": took})
        log(f"    done in {took:.2f} s")
        return value

    if not stack.is_running():
        # A rehearsal starts from nothing: earlier engines and model versions are not evidence.
        for leftover in [stack.model_repository, *work.glob("checkpoint-seed*"), *work.glob("engine-v*")]:
            shutil.rmtree(leftover, ignore_errors=True)
    state = step("start the local stack", stack.up)
    try:
        comps = state["components"]
        log("    " + ", ".join(f"{n}: {c['url']}" for n, c in comps.items()))
        triton = TritonControl(comps["triton"]["url"], model_repository=state["model_repository"])
        repo = Path(state["model_repository"])
        engines = []
        for spec in cfg.engines:
            def build(spec=spec):
                ckpt = make_reference_checkpoint(work / f"checkpoint-seed{spec['seed']}", seed=spec["seed"])
                params = {"precision": spec["precision"], "max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}
                meta = build_engine(ckpt, work / f"engine-v{spec['version']}", params,
                                    model_name=cfg.model, version=spec["version"])
                install_version(work / f"engine-v{spec['version']}", repo, model_name=cfg.model, version=spec["version"])
                return meta
            meta = step(f"build + install engine v{spec['version']} ({spec['precision']}, seed {spec['seed']})", build)
            engines.append({"version": spec["version"], "precision": meta.precision,
                            "checkpoint": meta.source_checkpoint_digest})
        summary["engines"] = engines
        versions = [e["version"] for e in engines]
        step(f"load versions {versions} in Triton", lambda: triton.load_versions(cfg.model, versions))
        probes = step("probe each version with a real inference",
                      lambda: [triton.probe(cfg.model, v) for v in versions])
        for p in probes:
            log(f"    v{p.version}: {p.text!r} ({p.latency_ms:.1f} ms)")
        summary["probes"] = [p.__dict__ for p in probes]

        stable, canary = versions[0], versions[-1]
        weights = {stable: 100 - cfg.canary_weight, canary: cfg.canary_weight}
        router = gateway_router(state)
        step(f"route {weights} on the gateway", lambda: router.set_weights(cfg.model, weights))
        prom = PrometheusClient(comps["prometheus"]["url"])
        # Counters before the traffic (the probes above went to Triton directly), read from a
        # scrape taken after the probes, so the figures below count exactly the rehearsal's requests.
        before = step("read the counters before the traffic", lambda: _counters_after(prom, cfg.model, time.time()))
        url = f"{comps['envoy']['url']}/v2/models/{cfg.model}/generate"
        load = step(f"send {cfg.requests} requests through the gateway",
                    lambda: send_generate_requests(url, count=cfg.requests, concurrency=cfg.concurrency))
        traffic_end = time.time()
        lo, hi = binomial_interval(cfg.requests, cfg.canary_weight / 100, 0.99)
        measured = load.by_version.get(str(canary), 0)
        summary["traffic"] = {
            "weights": weights, "requests": cfg.requests, "errors": load.errors,
            "by_version": dict(load.by_version), "canary_99pct_interval": [lo, hi],
            "split_ok": lo <= measured <= hi, "rps": round(cfg.requests / load.elapsed_s, 1),
            "p50_ms": load.percentile_ms(50), "p95_ms": load.percentile_ms(95),
        }
        summary["prometheus"] = step("read per-version metrics back from Prometheus",
                                     lambda: _read_metrics(prom, cfg.model, load.by_version, before, traffic_end))
    finally:
        if not cfg.keep_stack:
            step("stop the local stack", stack.down)
    out = Path(cfg.state_dir) / "rehearsal-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_file"] = str(out)
    return summary


# Envoy flushes its counters to /stats/prometheus every second (stats_flush_interval, the
# stack's bootstrap): a scrape must start that long after the last request to include it.
ENVOY_FLUSH_S = 1.0


def _series(model: str) -> dict[str, tuple[str, str]]:
    """name -> (series selector, the label that names the version)."""
    return {
        "triton_success": (f'nv_inference_request_success{{model="{model}"}}', "version"),
        "triton_duration_us": (f'nv_inference_request_duration_us{{model="{model}"}}', "version"),
        "gateway_2xx": (f'envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"{model}_v[0-9]+",'
                        f'envoy_response_code_class="2"}}', "envoy_cluster_name"),
    }


def _counters_after(prom: PrometheusClient, model: str, since: float, *, timeout_s: float = 30.0) -> dict:
    """Every counter, summed per version, as of a scrape that began ENVOY_FLUSH_S after `since`
    (unix time).

    Waits on Prometheus' own sample timestamps rather than on the values: a sum that merely
    reaches the expected total can be made up of probes and still miss the last requests.
    """
    deadline = time.monotonic() + timeout_s
    series = _series(model)
    while True:
        stamps = [s.value for name in ("triton_success", "gateway_2xx")
                  for s in prom.query(f"timestamp({series[name][0]})")]
        if stamps and min(stamps) >= since + ENVOY_FLUSH_S:
            return {name: prom.values_by(f"sum by ({label}) ({selector})", label)
                    for name, (selector, label) in series.items()}
        if time.monotonic() > deadline:
            raise MetricsError(f"Prometheus has no scrape of {model}'s counters from after {since:.0f} within "
                               f"{timeout_s:.0f} s (latest sample times {stamps})")
        time.sleep(0.25)


def _read_metrics(prom: PrometheusClient, model: str, expected: dict, before: dict, traffic_end: float) -> dict:
    """Per-version figures for the rehearsal's traffic alone: counters after minus before."""
    after = _counters_after(prom, model, traffic_end)

    def delta(name: str, key=lambda k: k) -> dict[str, float]:
        return {key(k): round(v - before[name].get(k, 0.0), 3) for k, v in after[name].items()
                if v - before[name].get(k, 0.0) > 0}

    triton = delta("triton_success")
    gateway = delta("gateway_2xx", key=lambda cluster: cluster.rsplit("_v", 1)[1])
    duration = delta("triton_duration_us")
    clients = {k: float(v) for k, v in expected.items()}
    return {
        "triton_success_by_version": triton,
        "triton_mean_request_ms_by_version": {v: round(duration.get(v, 0.0) / n / 1000, 2) for v, n in triton.items()},
        "gateway_2xx_by_version": gateway,
        "counts_match_clients": triton == clients and gateway == clients,
    }


def format_summary(summary: dict) -> str:
    lines = [f"Release rehearsal for {summary['model']}", ""]
    for s in summary["steps"]:
        lines.append(f"  {s['seconds']:8.2f} s  {s['step']}")
    t = summary.get("traffic")
    if t:
        lines += ["", f"Traffic: {t['requests']} requests at {t['weights']} -> {t['by_version']} "
                      f"(errors {t['errors']}, {t['rps']} req/s, p50 {t['p50_ms']:.1f} ms, p95 {t['p95_ms']:.1f} ms)",
                  f"Canary share inside its 99% binomial interval {t['canary_99pct_interval']}: {t['split_ok']}"]
    p = summary.get("prometheus")
    if p:
        lines += ["Prometheus, during the traffic only (probes excluded):",
                  "  Triton nv_inference_request_success by version " + json.dumps(p["triton_success_by_version"]),
                  "  Triton mean request ms by version " + json.dumps(p["triton_mean_request_ms_by_version"]),
                  "  gateway 2xx by version " + json.dumps(p["gateway_2xx_by_version"]),
                  f"  both equal what the clients saw: {p['counts_match_clients']}"]
    if summary.get("summary_file"):
        lines += ["", f"Summary written to {summary['summary_file']}"]
    return "\n".join(lines)
