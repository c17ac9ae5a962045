"""The perf verdict: a candidate's bench against the stable version's, gate by gate, and its report.

Gates are the largest regression allowed per metric, checked at every concurrency level both
versions were measured at:

- latencies (`ttft_*_ms`, `itl_*_ms`, `e2e_*_ms` at p50/p95/p99/mean/max): the candidate may be
  at most that many percent slower, e.g. `ttft_p95_ms: 25` allows +25%. A regression also has
  to exceed `latency_slack_ms` (default 0.25 ms) in absolute terms: on sub-millisecond figures
  a hundred microseconds of scheduler noise would otherwise read as +20%;
- throughputs (`output_tokens_per_s`, `requests_per_s`): at most that many percent lower;
- `error_rate`: the candidate's error rate (a share, 0..1) may be at most this, absolute.

A figure that one side lacks (every request failed, a level missing) fails its check with
"no data": a comparison that could not be made is never a pass. The verdict carries both
results, every check with its numbers, and one sentence of why; `write_bench_report` writes
it as JSON and as an SVG plot (hand-written: no plotting dependency) of candidate against
stable per concurrency. No Airflow imports here.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_release.errors import SpecError
from llm_release.fsutil import write_atomically
from llm_release.perf.bench import BenchResult

DEFAULT_GATES: dict[str, float] = {
    "ttft_p95_ms": 25.0,
    "itl_p95_ms": 25.0,
    "output_tokens_per_s": 15.0,
    "error_rate": 0.01,
}
DEFAULT_LATENCY_SLACK_MS = 0.25
_THROUGHPUTS = ("output_tokens_per_s", "requests_per_s")
_LATENCY_FAMILIES = ("ttft", "itl", "e2e")
_LATENCY_STATS = ("mean", "p50", "p95", "p99", "max")


def _kind(metric: str) -> str | None:
    if metric in _THROUGHPUTS:
        return "throughput"
    if metric == "error_rate":
        return "error_rate"
    family, _, rest = metric.partition("_")
    if family in _LATENCY_FAMILIES and rest.endswith("_ms") and rest[:-3] in _LATENCY_STATS:
        return "latency"
    return None


def parse_gates(gates: dict | None = None) -> tuple[dict[str, float], float]:
    """Defaults overlaid with `gates`; a metric set to None is not gated. Returns (gates, slack_ms)."""
    merged: dict[str, Any] = dict(DEFAULT_GATES)
    slack = DEFAULT_LATENCY_SLACK_MS
    if gates is not None and not isinstance(gates, dict):
        raise SpecError("gates", f"{gates!r} is not a mapping", 'write e.g. {"ttft_p95_ms": 25}')
    for key, value in (gates or {}).items():
        if key == "latency_slack_ms":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SpecError("gates.latency_slack_ms", f"{value!r} is not a non-negative number of ms", "write e.g. 1")
            slack = float(value)
            continue
        kind = _kind(key)
        if kind is None:
            raise SpecError(f"gates.{key}", "is not a known metric",
                            "use ttft_/itl_/e2e_ + p50|p95|p99|mean|max + _ms, output_tokens_per_s, "
                            "requests_per_s, error_rate or latency_slack_ms")
        if value is None:
            merged.pop(key, None)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SpecError(f"gates.{key}", f"{value!r} is not a non-negative number",
                            "a percent for latencies and throughputs, a share (0..1) for error_rate")
        if kind == "error_rate" and value > 1:
            raise SpecError(f"gates.{key}", f"{value!r} is over 1", "error_rate is a share: write e.g. 0.01 for 1%")
        if kind == "throughput" and value >= 100:
            raise SpecError(f"gates.{key}", f"{value!r}% would allow no throughput at all", "write e.g. 15")
        merged[key] = float(value)
    return merged, slack


@dataclass
class Check:
    metric: str
    concurrency: int
    candidate: float | None
    stable: float | None
    change_pct: float | None  # candidate against stable, signed (+ is higher)
    limit: float
    status: str  # "pass", "fail" or "no_data"
    reason: str


@dataclass
class BenchVerdict:
    passed: bool
    summary: str
    checks: list[Check]
    gates: dict[str, float]
    latency_slack_ms: float
    candidate: dict
    stable: dict
    failed_checks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON types, for XCom and files."""
        return asdict(self)


def _pct(candidate: float, stable: float) -> float | None:
    if stable == 0:
        return 0.0 if candidate == 0 else math.inf
    return (candidate - stable) / stable * 100.0


def _check(metric: str, limit: float, c: int, cand: float | None, stab: float | None, slack: float) -> Check:
    kind = _kind(metric)
    if kind == "error_rate":
        if cand is None:
            return Check(metric, c, cand, stab, None, limit, "no_data", "error_rate: no candidate requests")
        ok = cand <= limit
        return Check(metric, c, cand, stab, None, limit, "pass" if ok else "fail",
                     f"error rate {cand:.1%} {'<=' if ok else '>'} {limit:.1%}")
    if cand is None or stab is None:
        side = "candidate" if cand is None else "stable"
        return Check(metric, c, cand, stab, None, limit, "no_data",
                     f"{metric}: no {side} figure (no successful request measured it)")
    change = _pct(cand, stab)
    shown = "n/a" if change is None or math.isinf(change) else f"{change:+.1f}%"
    if kind == "latency":
        within = change <= limit
        ok = within or (cand - stab) <= slack
        note = "" if within or not ok else f", but within the {slack:g} ms slack"
        reason = f"{metric} {cand:.2f} vs {stab:.2f} ms ({shown}, limit +{limit:g}%{note})"
    else:  # throughput
        ok = change >= -limit
        reason = f"{metric} {cand:.1f} vs {stab:.1f} ({shown}, limit -{limit:g}%)"
    return Check(metric, c, cand, stab, None if math.isinf(change) else round(change, 2), limit,
                 "pass" if ok else "fail", reason)


def compare(candidate: BenchResult | dict, stable: BenchResult | dict, gates: dict | None = None) -> BenchVerdict:
    """Judge candidate against stable at every concurrency either was measured at."""
    cand = candidate if isinstance(candidate, BenchResult) else BenchResult.from_dict(candidate)
    stab = stable if isinstance(stable, BenchResult) else BenchResult.from_dict(stable)
    merged, slack = parse_gates(gates)
    if not merged:
        raise SpecError("gates", "every gate is turned off", "keep at least one gate, or do not run the bench")
    levels = sorted({lv.concurrency for lv in cand.levels} | {lv.concurrency for lv in stab.levels})
    if not levels:
        raise SpecError("candidate", "neither result has a measured level", "run the bench first")
    checks = []
    for c in levels:
        lc, ls = cand.level(c), stab.level(c)
        for metric, limit in merged.items():
            checks.append(_check(metric, limit, c, None if lc is None else lc.metric(metric),
                                 None if ls is None else ls.metric(metric), slack))
    bad = [ch for ch in checks if ch.status != "pass"]
    verdict = BenchVerdict(passed=not bad, summary="", checks=checks, gates=merged, latency_slack_ms=slack,
                           candidate=cand.to_dict(), stable=stab.to_dict(),
                           failed_checks=[f"{ch.metric}@c{ch.concurrency}" for ch in bad])
    verdict.summary = _summary(verdict, levels, bad)
    return verdict


def _summary(verdict: BenchVerdict, levels: list[int], bad: list[Check]) -> str:
    cand, stab = verdict.candidate["target"]["label"], verdict.stable["target"]["label"]
    at = "concurrency " + ", ".join(str(c) for c in levels)
    if not bad:
        worst = _worst(verdict.checks)
        extra = f" (closest: {worst.reason} at concurrency {worst.concurrency})" if worst else ""
        return f"PASS: {cand} is within every perf gate against {stab} at {at}{extra}."
    first = bad[0]
    more = f", and {len(bad) - 1} more check(s) failed" if len(bad) > 1 else ""
    what = "had no data" if first.status == "no_data" else "failed"
    return f"FAIL: {cand} against {stab}: {first.reason} at concurrency {first.concurrency} {what}{more}."


def _worst(checks: list[Check]) -> Check | None:
    """The passing check nearest its limit, to say how much room was left."""
    def room(ch: Check) -> float:
        if ch.change_pct is None:
            return math.inf
        kind = _kind(ch.metric)
        return ch.limit - ch.change_pct if kind == "latency" else ch.limit + ch.change_pct
    scored = [ch for ch in checks if ch.change_pct is not None]
    return min(scored, key=room) if scored else None


# -- files -------------------------------------------------------------------------------------

def write_bench_report(verdict: BenchVerdict | dict, out_dir: str | Path) -> dict[str, Path]:
    """`perf_verdict.json` (the verdict with both results) and `perf_bench.svg` in `out_dir`."""
    doc = verdict.to_dict() if isinstance(verdict, BenchVerdict) else dict(verdict)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "perf_verdict.json", "svg": out / "perf_bench.svg"}
    write_atomically(paths["json"], json.dumps(doc, indent=2) + "\n", mode=0o644)
    write_atomically(paths["svg"], render_svg(doc), mode=0o644)
    return paths


_PANELS = (("ttft_p95_ms", "TTFT p95 (ms)"), ("itl_p95_ms", "ITL p95 (ms)"),
           ("output_tokens_per_s", "output tokens/s"), ("error_rate", "error rate"))
_COLOURS = {"candidate": "#d95f02", "stable": "#1b9e77"}


def render_svg(doc: dict) -> str:
    """Four panels (TTFT p95, ITL p95, output tokens/s, error rate) against concurrency, one
    line per version; failed checks are ringed in red."""
    width, height, pw, ph = 960, 330, 200, 190
    left0, top = 50, 70
    failed = set(doc.get("failed_checks", []))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold" '
             f'fill="{"#1b7f3b" if doc.get("passed") else "#c0392b"}">'
             f'{"PASS" if doc.get("passed") else "FAIL"}: {_esc(doc["candidate"]["target"]["label"])} (candidate) '
             f'vs {_esc(doc["stable"]["target"]["label"])} (stable)</text>',
             f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#444">'
             f'{_esc(_clip(doc.get("summary", "").split(": ", 1)[-1], 150))}</text>']
    levels = sorted({lv["concurrency"] for role in ("candidate", "stable") for lv in doc[role]["levels"]})
    for i, (metric, title) in enumerate(_PANELS):
        x0 = left0 + i * (pw + 40)
        parts.append(_panel(doc, metric, title, levels, x0, top, pw, ph, failed))
    lx, y = width - 400, height - 14
    for j, role in enumerate(("candidate", "stable")):
        parts.append(f'<line x1="{lx + j * 110}" y1="{y - 4}" x2="{lx + j * 110 + 24}" y2="{y - 4}" '
                     f'stroke="{_COLOURS[role]}" stroke-width="2.5"/>'
                     f'<text x="{lx + j * 110 + 30}" y="{y}">{role}</text>')
    parts.append(f'<circle cx="{lx + 232}" cy="{y - 4}" r="7" fill="none" stroke="#c0392b" stroke-width="2"/>'
                 f'<text x="{lx + 246}" y="{y}">gate failed at this level</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(doc, metric, title, levels, x0, y0, w, h, failed) -> str:
    series = {}
    for role in ("candidate", "stable"):
        by_c = {lv["concurrency"]: _figure(lv, metric) for lv in doc[role]["levels"]}
        series[role] = [(c, by_c.get(c)) for c in levels]
    values = [v for pts in series.values() for _, v in pts if v is not None]
    top, divisions = _nice_max(max(values) if values else 1.0)
    out = [f'<g><text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">{_esc(title)}</text>',
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for k in range(divisions + 1):  # y grid and labels
        val = top * k / divisions
        y = y0 + h - h * k / divisions
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(val)}</text>')

    def px(idx: int) -> float:
        return x0 + (w * (idx + 0.5) / len(levels) if levels else w / 2)

    for idx, c in enumerate(levels):
        out.append(f'<text x="{px(idx):.1f}" y="{y0 + h + 14}" text-anchor="middle" fill="#555">c={c}</text>')
    for role, pts in series.items():
        coords = [(px(idx), y0 + h - h * (v / top if top else 0)) for idx, (_, v) in enumerate(pts) if v is not None]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            out.append(f'<polyline points="{path}" fill="none" stroke="{_COLOURS[role]}" stroke-width="2"/>')
        for idx, (c, v) in enumerate(pts):
            if v is None:
                continue
            x, y = px(idx), y0 + h - h * (v / top if top else 0)
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{_COLOURS[role]}">'
                       f'<title>{role} c={c}: {_fmt(v)}</title></circle>')
            if role == "candidate" and f"{metric}@c{c}" in failed:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="#c0392b" stroke-width="2"/>')
    out.append("</g>")
    return "\n".join(out)


def _figure(level: dict, metric: str) -> float | None:
    if metric in ("output_tokens_per_s", "requests_per_s", "error_rate"):
        return level.get(metric)
    family, _, rest = metric.partition("_")
    return (level.get(f"{family}_ms") or {}).get(rest.removesuffix("_ms"))


def _nice_max(value: float) -> tuple[float, int]:
    """A round axis top at or above `value` (1, 2, 2.5, 5 or 10 times a power of ten) and a
    number of grid divisions that gives round tick labels."""
    if value <= 0 or not math.isfinite(value):
        return 1.0, 4
    exp = 10 ** math.floor(math.log10(value))
    for step, divisions in ((1, 5), (2, 4), (2.5, 5), (5, 5), (10, 5)):
        if value <= step * exp * (1 + 1e-9):
            return step * exp, divisions
    return 10 * exp, 5


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
