"""Move traffic safely: check readiness first, remember the previous routing, restore it exactly.

A version gets traffic only once Triton says it is READY (checked, not assumed) and answers a
real inference. The routing in force before the change is returned (and kept by the caller:
XCom, a file) so a rollback restores exactly that, header routes and mirror included.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from llm_release.errors import SpecError
from llm_release.fsutil import write_atomically
from llm_release.routing.base import TrafficRouter
from llm_release.routing.state import RoutingState

LOG = logging.getLogger("llm_release.routing.shift")


@dataclass(frozen=True)
class ShiftResult:
    previous: RoutingState | None
    applied: RoutingState
    seconds: float

    def to_dict(self) -> dict:
        return {"previous": self.previous.to_dict() if self.previous else None, "applied": self.applied.to_dict(),
                "seconds": self.seconds}


def check_ready(triton, state: RoutingState, *, probe: bool = True) -> None:
    """Every version that would receive traffic is READY in Triton (and answers, if probe)."""
    ready = set(triton.ready_versions(state.model))
    missing = sorted(state.versions - ready)
    if missing:
        raise SpecError("weights", f"{state.model} versions {missing} are not READY in Triton (READY: {sorted(ready)})",
                        "load them first (TritonLoadOperator / llm-release sync)")
    if probe:
        for version in sorted(state.versions):
            triton.probe(state.model, version)


def shift_traffic(router: TrafficRouter, target: RoutingState, *, triton=None, probe: bool = True,
                  log: logging.Logger = LOG) -> ShiftResult:
    """Apply `target` after the readiness checks; return what was in force before."""
    started = time.monotonic()
    if triton is not None:
        check_ready(triton, target, probe=probe)
    previous = router.get_state(target.model)
    if previous == target:
        log.info("%s: routing is already %s; nothing to do", target.model, target.to_dict())
        return ShiftResult(previous, previous, round(time.monotonic() - started, 3))
    log.info("%s: %s -> %s", target.model, previous.to_dict() if previous else "no route", target.to_dict())
    applied = router.apply(target)
    return ShiftResult(previous, applied, round(time.monotonic() - started, 3))


def save_state(path: Path, result: ShiftResult) -> None:
    """Keep a shift's before/after on disk, for a rollback from the command line."""
    write_atomically(Path(path), json.dumps(result.to_dict(), indent=2))


def load_previous(path: Path) -> RoutingState:
    doc = json.loads(Path(path).read_text())
    if not doc.get("previous"):
        raise SpecError("previous", f"{path} records no routing before the shift", "nothing to roll back to")
    return RoutingState.from_dict(doc["previous"])
