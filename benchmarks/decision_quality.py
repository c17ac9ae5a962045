"""Decision quality of the canary judge beside a Flagger-style rule, on the same simulated data.

The bar (design, section 7): at 60 canary requests a minute, a stable error rate of 1% and a
bad canary failing 3x as often, <= 1% wrong verdicts either way, in about 7 (bad) to 9 (good)
minutes on average; a Flagger-style rule (success rate >= 99% each minute, rollback at 5
failed checks) rolls back about half of the good canaries there; no test on a fixed 10-minute
window gets under about 4% either way.

Each simulated canary is one stream of 10-second intervals (canary and baseline counts, latency
histograms in Envoy's buckets), fed to every rule alike:
- the judge with its default settings (checks a simulation cannot feed, streaming probe and
  GPU, switched off with that reason), stopping at its first PASS or FAIL; a canary still
  undecided at the step's limit (--limit-min) is rolled back, as a release would;
- Flagger-style: one check a minute, success rate (non-5xx share) >= 99%; rollback at the 5th
  failed check, promotion after 10 checks;
- a fixed 10-minute window with the best cut-off on the canary's error count, chosen on this
  very data (an upper bound on what any fixed-window test achieves here).

More scenarios (other traffic levels, splits and faults) run with fewer canaries each, for the
judge alone, so it is seen on cases beyond the one it is measured against.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.analysis.judge import CanaryJudge  # noqa: E402
from llm_release.analysis.simulate import SIMULATION_DISABLED, Scenario, VersionTruth  # noqa: E402
from llm_release.analysis.verdict import Outcome  # noqa: E402

INTERVAL_S = 10.0


def flagger_style(intervals, *, min_success=0.99, threshold=5, iterations=10) -> tuple[str, float]:
    """(outcome, minutes): one check per minute of canary traffic, Flagger's failed-check count."""
    per_check = int(60 / INTERVAL_S)
    failed = 0
    for check in range(iterations):
        chunk = intervals[check * per_check:(check + 1) * per_check]
        requests = sum(iv.canary.requests for iv in chunk)
        errors = sum(iv.canary.errors_5xx for iv in chunk)
        # No data counts as a failed check in Flagger.
        if requests == 0 or (requests - errors) / requests < min_success:
            failed += 1
        if failed >= threshold:
            return "FAIL", (check + 1)
    return "PASS", float(iterations)


def judge(intervals, limit_s: float, config: dict) -> tuple[str, float]:
    j = CanaryJudge(config)
    verdict = None
    for iv in intervals:
        verdict = j.observe(iv)
        if verdict.final or verdict.seconds >= limit_s:
            break
    # Undecided at the limit: the step fails and the release rolls back.
    outcome = verdict.outcome.value if verdict.final else "UNDECIDED"
    return outcome, verdict.seconds / 60


def run_scenario(name, scenario: Scenario, *, bad: bool, runs: int, limit_s: float, rng, config, rules):
    stats = {rule: {"FAIL": 0, "PASS": 0, "UNDECIDED": 0, "minutes": []} for rule in rules}
    window = []  # canary 5xx in the first 10 minutes, for the fixed-window rule
    for _ in range(runs):
        intervals = list(scenario.intervals(rng, seconds=limit_s))
        for rule in rules:
            if rule == "judge":
                outcome, minutes = judge(intervals, limit_s, config)
            else:
                outcome, minutes = flagger_style(intervals)
            stats[rule][outcome] += 1
            stats[rule]["minutes"].append(minutes)
        window.append(sum(iv.canary.errors_5xx for iv in intervals[:int(600 / INTERVAL_S)]))
    out = {}
    for rule, s in stats.items():
        wrong = (s["PASS"] if bad else s["FAIL"] + s["UNDECIDED"])
        out[rule] = {"runs": runs, "pass": s["PASS"], "fail": s["FAIL"], "undecided_at_limit": s["UNDECIDED"],
                     ("missed" if bad else "false_rollbacks"): wrong, "wrong_share": round(wrong / runs, 4),
                     "mean_minutes": round(float(np.mean(s["minutes"])), 2),
                     "p90_minutes": round(float(np.percentile(s["minutes"], 90)), 2)}
    return out, window


def best_fixed_window(good_counts, bad_counts) -> dict:
    """The cut-off on the 10-minute error count minimising the larger of the two error shares."""
    good, bad = np.array(good_counts), np.array(bad_counts)
    best = None
    for cut in range(0, int(max(bad.max(), good.max())) + 2):
        false_rb = float(np.mean(good >= cut))
        missed = float(np.mean(bad < cut))
        if best is None or max(false_rb, missed) < max(best["false_rollbacks_share"], best["missed_share"]):
            best = {"fail_at_errors": cut, "false_rollbacks_share": round(false_rb, 4), "missed_share": round(missed, 4)}
    best["minutes"] = 10.0
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="good and bad canaries each (headline scenario)")
    parser.add_argument("--extra-runs", type=int, default=200, help="canaries per extra scenario")
    parser.add_argument("--limit-min", type=float, default=30.0, help="a step's longest soak")
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    config = {"disabled": dict(SIMULATION_DISABLED)}
    limit_s = args.limit_min * 60
    started = time.perf_counter()

    stable = VersionTruth(60 * 99, error_5xx=0.01)  # 1% canary weight: the baseline takes 99x
    headline = {}
    good, good_window = run_scenario("good", Scenario(VersionTruth(60, 0.01), stable, interval_s=INTERVAL_S),
                                     bad=False, runs=args.runs, limit_s=limit_s, rng=rng, config=config,
                                     rules=("judge", "flagger_style"))
    bad, bad_window = run_scenario("bad", Scenario(VersionTruth(60, 0.03), stable, interval_s=INTERVAL_S),
                                   bad=True, runs=args.runs, limit_s=limit_s, rng=rng, config=config,
                                   rules=("judge", "flagger_style"))
    for rule in ("judge", "flagger_style"):
        headline[rule] = {"good": good[rule], "bad": bad[rule]}
    headline["fixed_10_min_window_best_cutoff"] = best_fixed_window(good_window, bad_window)

    extra_cases = {
        # name: (canary truth, baseline truth, bad?, faulty canary from onset, onset_s)
        "10% weight, good": (VersionTruth(600, 0.01), VersionTruth(5400, 0.01), False, None, 0),
        "10% weight, 3x errors": (VersionTruth(600, 0.03), VersionTruth(5400, 0.01), True, None, 0),
        "50% split, good": (VersionTruth(3000, 0.01), VersionTruth(3000, 0.01), False, None, 0),
        "50% split, 3x errors": (VersionTruth(3000, 0.03), VersionTruth(3000, 0.01), True, None, 0),
        "clean baseline (0%), good": (VersionTruth(60, 0.0), VersionTruth(5940, 0.0), False, None, 0),
        "clean baseline, canary 2% errors": (VersionTruth(60, 0.02), VersionTruth(5940, 0.0), True, None, 0),
        "1% weight, 10x errors": (VersionTruth(60, 0.10), stable, True, None, 0),
        "1% weight, 2x slower": (VersionTruth(60, 0.01, latency_median_ms=400), stable, True, None, 0),
        "1% weight, 10% slower (under the 1.5x minimum effect)": (
            VersionTruth(60, 0.01, latency_median_ms=220), stable, False, None, 0),
        "1% weight, 20% of answers refused": (VersionTruth(60, 0.01, error_4xx=0.2), stable, True, None, 0),
        "1% weight, 30% errors after 5 min": (VersionTruth(60, 0.01), stable, True, VersionTruth(60, 0.30), 300),
    }
    extra = {}
    for name, (canary, baseline, is_bad, faulty, onset) in extra_cases.items():
        scenario = Scenario(canary, baseline, faulty_canary=faulty, onset_s=onset, interval_s=INTERVAL_S)
        if faulty is not None:
            # A late fault: the judge must not stop at an early PASS; it watches the whole step.
            extra[name] = late_fault(scenario, runs=args.extra_runs, limit_s=limit_s, onset_s=onset,
                                     rng=rng, config=config)
            continue
        result, _ = run_scenario(name, scenario, bad=is_bad, runs=args.extra_runs, limit_s=limit_s, rng=rng,
                                 config=config, rules=("judge",))
        extra[name] = result["judge"]

    figures = {"settings": {"canary_requests_per_min": 60, "stable_error_rate": 0.01, "bad_error_rate": 0.03,
                            "interval_s": INTERVAL_S, "limit_min": args.limit_min, "runs_each": args.runs,
                            "seed": args.seed},
               "headline": headline, "extra_scenarios": extra,
               "seconds": round(time.perf_counter() - started, 1)}
    print_table(headline, extra)
    write_results("decision_quality", figures)


def late_fault(scenario: Scenario, *, runs, limit_s, onset_s, rng, config) -> dict:
    """Minutes from fault onset to FAIL for a canary fine at first, watched through the step."""
    caught, minutes = 0, []
    for _ in range(runs):
        j = CanaryJudge(config)
        for iv in scenario.intervals(rng, seconds=limit_s):
            verdict = j.observe(iv)
            if verdict.outcome is Outcome.FAIL:
                if verdict.at - iv.start >= 0:
                    caught += 1
                    minutes.append((verdict.seconds - onset_s) / 60)
                break
    return {"runs": runs, "caught": caught, "missed": runs - caught, "wrong_share": round((runs - caught) / runs, 4),
            "mean_minutes_after_onset": round(float(np.mean(minutes)), 2) if minutes else None,
            "max_minutes_after_onset": round(float(np.max(minutes)), 2) if minutes else None}


def print_table(headline: dict, extra: dict) -> None:
    print("headline: 60 canary requests/min, stable 1% errors, bad canary 3%")
    print(f"{'rule':<34}{'false rollbacks':>17}{'missed':>10}{'min to verdict (good/bad)':>28}")
    for rule in ("judge", "flagger_style"):
        g, b = headline[rule]["good"], headline[rule]["bad"]
        print(f"{rule:<34}{100 * g['wrong_share']:>16.1f}%{100 * b['wrong_share']:>9.1f}%"
              f"{g['mean_minutes']:>18.1f} / {b['mean_minutes']:.1f}")
    f = headline["fixed_10_min_window_best_cutoff"]
    print(f"{'fixed 10-min window, best cut-off':<34}{100 * f['false_rollbacks_share']:>16.1f}%"
          f"{100 * f['missed_share']:>9.1f}%{10.0:>18.1f} / 10.0")
    print("\nother scenarios (judge):")
    for name, r in extra.items():
        print(f"  {name:<40} wrong {100 * r['wrong_share']:5.1f}%  "
              + (f"mean {r['mean_minutes']:.1f} min" if "mean_minutes" in r
                 else f"caught {r['mean_minutes_after_onset']} min after onset (max {r['max_minutes_after_onset']})"))


if __name__ == "__main__":
    main()
