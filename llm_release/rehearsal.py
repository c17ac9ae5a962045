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
    work = Path(cfg.state_dir) / "rehearsal"

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
        for leftover in (work, stack.model_repository):
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
        url = f"{comps['envoy']['url']}/v2/models/{cfg.model}/generate"
        load = step(f"send {cfg.requests} requests through the gateway",
                    lambda: send_generate_requests(url, count=cfg.requests, concurrency=cfg.concurrency))
        lo, hi = binomial_interval(cfg.requests, cfg.canary_weight / 100, 0.99)
        measured = load.by_version.get(str(canary), 0)
        summary["traffic"] = {
            "weights": weights, "requests": cfg.requests, "errors": load.errors,
            "by_version": dict(load.by_version), "canary_99pct_interval": [lo, hi],
            "split_ok": lo <= measured <= hi, "rps": round(cfg.requests / load.elapsed_s, 1),
            "p50_ms": load.percentile_ms(50), "p95_ms": load.percentile_ms(95),
        }
        summary["prometheus"] = step("read per-version metrics back from Prometheus",
                                     lambda: _read_metrics(comps["prometheus"]["url"], cfg.model, load.by_version))
    finally:
        if not cfg.keep_stack:
            step("stop the local stack", stack.down)
    out = Path(cfg.state_dir) / "rehearsal-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_file"] = str(out)
    return summary


def _read_metrics(prom_url: str, model: str, expected: dict) -> dict:
    """Wait until Prometheus has scraped every request, then read per-version figures."""
    prom = PrometheusClient(prom_url)
    total = sum(expected.values())
    success = f'sum by (version) (nv_inference_request_success{{model="{model}"}})'
    # Probes went to each version too, so Triton counts at least what the load generator saw.
    prom.wait_for(success, lambda s: sum(x.value for x in s) >= total, timeout_s=30)
    by_version = prom.values_by(success, "version")
    mean_ms = prom.values_by(
        f'sum by (version) (nv_inference_request_duration_us{{model="{model}"}}) / '
        f'sum by (version) (nv_inference_request_success{{model="{model}"}}) / 1000', "version")
    gateway_query = (f'sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_xx{{envoy_cluster_name=~"{model}_v[0-9]+",'
                     f'envoy_response_code_class="2"}})')
    prom.wait_for(gateway_query, lambda s: sum(x.value for x in s) >= total, timeout_s=30)
    gateway = prom.values_by(gateway_query, "envoy_cluster_name")
    return {
        "triton_success_by_version": by_version,
        "triton_mean_request_ms_by_version": {k: round(v, 2) for k, v in mean_ms.items()},
        "gateway_2xx_by_cluster": gateway,
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
        lines += ["Prometheus: nv_inference_request_success by version " + json.dumps(p["triton_success_by_version"]),
                  "            mean request ms by version " + json.dumps(p["triton_mean_request_ms_by_version"]),
                  "            gateway 2xx by version cluster " + json.dumps(p["gateway_2xx_by_cluster"])]
    if summary.get("summary_file"):
        lines += ["", f"Summary written to {summary['summary_file']}"]
    return "\n".join(lines)
