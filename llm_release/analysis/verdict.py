"""Verdicts: PASS, FAIL or INCONCLUSIVE, with the numbers behind them and one sentence of why.

A verdict is made of checks (a fixed-threshold gate or a canary-versus-baseline test). A check
that is switched off says so and why, and is listed, so a reader never mistakes a gate that
was not evaluated for one that passed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone


class Outcome(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    DISABLED = "DISABLED"  # a check switched off by configuration (never part of a PASS)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CheckResult:
    """One gate or test: its outcome, what it observed, what it compares with, and why."""

    name: str
    kind: str  # "threshold" (fixed), "compare" (canary vs baseline, sequential) or "health"
    outcome: Outcome
    reason: str
    canary: str = ""  # the observed value, readable ("3.1% of 1,204")
    reference: str = ""  # the baseline or threshold it is held against
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "outcome": self.outcome.value, "reason": self.reason,
                "canary": self.canary, "reference": self.reference, "numbers": self.numbers}

    @classmethod
    def from_dict(cls, doc: dict) -> "CheckResult":
        return cls(doc["name"], doc["kind"], Outcome(doc["outcome"]), doc["reason"], doc.get("canary", ""),
                   doc.get("reference", ""), dict(doc.get("numbers") or {}))


@dataclass(frozen=True)
class Verdict:
    """The judge's answer after the intervals seen so far."""

    outcome: Outcome
    reason: str
    checks: tuple[CheckResult, ...]
    at: float  # end of the last interval looked at (seconds since the epoch)
    started: float  # start of the first interval
    intervals: int
    canary_requests: float
    baseline_requests: float
    decided_at: float | None = None  # when the outcome first became final (FAIL, or PASS)

    @property
    def final(self) -> bool:
        return self.outcome in (Outcome.PASS, Outcome.FAIL)

    @property
    def seconds(self) -> float:
        return max(0.0, self.at - self.started)

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"outcome": self.outcome.value, "reason": self.reason, "at": self.at, "started": self.started,
                "seconds": round(self.seconds, 3), "intervals": self.intervals,
                "canary_requests": self.canary_requests, "baseline_requests": self.baseline_requests,
                "decided_at": self.decided_at, "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, doc: dict) -> "Verdict":
        return cls(Outcome(doc["outcome"]), doc["reason"], tuple(CheckResult.from_dict(c) for c in doc["checks"]),
                   doc["at"], doc["started"], doc["intervals"], doc["canary_requests"], doc["baseline_requests"],
                   doc.get("decided_at"))

    def table(self) -> str:
        """The verdict as a plain-text table, for task logs and terminals."""
        header = ("check", "kind", "outcome", "canary", "held against", "why")
        rows = [header] + [(c.name, c.kind, c.outcome.value, c.canary, c.reference, c.reason) for c in self.checks]
        widths = [max(len(str(row[i])) for row in rows[:]) for i in range(len(header) - 1)]
        lines = []
        for n, row in enumerate(rows):
            cells = [str(cell).ljust(width) for cell, width in zip(row, widths)]
            lines.append("  ".join(cells + [str(row[-1])]).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths) + "  ---")
        when = datetime.fromtimestamp(self.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        summary = (f"{self.outcome.value}: {self.reason}\n"
                   f"({self.intervals} intervals over {self.seconds:.0f} s up to {when}; "
                   f"canary {_count(self.canary_requests)} requests, baseline {_count(self.baseline_requests)})")
        return summary + "\n" + "\n".join(lines)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def combine(checks: list[CheckResult]) -> tuple[Outcome, str]:
    """FAIL if any check fails; PASS only if every enabled check passes; INCONCLUSIVE otherwise."""
    failed = [c for c in checks if c.outcome is Outcome.FAIL]
    if failed:
        return Outcome.FAIL, "; ".join(f"{c.name}: {c.reason}" for c in failed)
    enabled = [c for c in checks if c.outcome is not Outcome.DISABLED]
    if not enabled:
        return Outcome.INCONCLUSIVE, "every check is disabled: nothing was judged"
    pending = [c for c in enabled if c.outcome is Outcome.INCONCLUSIVE]
    if pending:
        return Outcome.INCONCLUSIVE, "; ".join(f"{c.name}: {c.reason}" for c in pending)
    passed = ", ".join(c.name for c in enabled)
    return Outcome.PASS, f"every enabled check passed ({passed})"
