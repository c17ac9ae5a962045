"""The routing of one model, as every router writes it and reads it back.

One value type for all gateways (Envoy, Istio, Gateway API): the weighted split of ordinary
traffic, optional header routes (A/B: `x-experiment: B` -> version 2, checked before the split),
and an optional mirror (shadow: a percentage of requests copied to a version whose answers are
discarded). Blue-green is a split of 100 to one version with the others kept loaded. Routers
verify what they wrote by reading it back into this type and comparing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from llm_release.errors import SpecError

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
HEADER_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _version(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(where, f"version {value!r} is not a positive integer", "use Triton version numbers 1, 2, 3, ...")
    return value


@dataclass(frozen=True)
class RoutingState:
    model: str
    weights: dict[int, int]  # version -> percent of ordinary traffic; integers summing to 100
    header: str | None = None  # lower-case header name for A/B routes, e.g. "x-experiment"
    header_routes: dict[str, int] = field(default_factory=dict)  # header value -> version
    mirror_version: int | None = None
    mirror_percent: int = 0  # 0..100 of ordinary traffic copied to mirror_version

    def __post_init__(self):
        validate_state(self)
        # A weight of 0 is the same routing as no entry: keep one canonical form, so states
        # read back from a gateway compare equal to the ones written.
        object.__setattr__(self, "weights", {v: w for v, w in sorted(self.weights.items()) if w > 0})

    @property
    def versions(self) -> set[int]:
        """Every version that receives traffic (split, header routes or mirror)."""
        out = {v for v, w in self.weights.items() if w > 0} | set(self.header_routes.values())
        if self.mirror_version is not None and self.mirror_percent > 0:
            out.add(self.mirror_version)
        return out

    # -- transitions (pure) ---------------------------------------------------------------
    def with_weights(self, weights: dict[int, int]) -> "RoutingState":
        return replace(self, weights=dict(weights))

    def with_header_routes(self, header: str | None, routes: dict[str, int]) -> "RoutingState":
        return replace(self, header=header if routes else None, header_routes=dict(routes) if header else {})

    def with_mirror(self, version: int | None, percent: int) -> "RoutingState":
        if version is None or percent == 0:
            return replace(self, mirror_version=None, mirror_percent=0)
        return replace(self, mirror_version=version, mirror_percent=percent)

    def switched_to(self, version: int) -> "RoutingState":
        """Blue-green: all ordinary traffic to `version`, header routes and mirror cleared."""
        return RoutingState(self.model, {version: 100})

    def describe(self) -> str:
        """The routing in words for logs: 'v1 90%, v2 10%; x-experiment=B -> v2; mirror 100% to v3'."""
        text = ", ".join(f"v{v} {w}%" for v, w in sorted(self.weights.items()))
        if self.header_routes:
            text += "; " + ", ".join(f"{self.header}={k} -> v{v}" for k, v in sorted(self.header_routes.items()))
        if self.mirror_version and self.mirror_percent:
            text += f"; mirror {self.mirror_percent}% to v{self.mirror_version}"
        return text

    def to_dict(self) -> dict:
        return {"model": self.model, "weights": {str(v): w for v, w in sorted(self.weights.items())},
                "header": self.header, "header_routes": dict(sorted(self.header_routes.items())),
                "mirror_version": self.mirror_version, "mirror_percent": self.mirror_percent}

    @classmethod
    def from_dict(cls, doc: dict) -> "RoutingState":
        def as_int(v):
            return int(v) if isinstance(v, str) and v.isdigit() else v

        return cls(model=doc["model"], weights={as_int(v): w for v, w in doc["weights"].items()},
                   header=doc.get("header"), header_routes={k: as_int(v) for k, v in (doc.get("header_routes") or {}).items()},
                   mirror_version=as_int(doc.get("mirror_version")), mirror_percent=doc.get("mirror_percent", 0))


def parse_weights(doc) -> dict[int, int]:
    """Weights as users write them: {"1": 90, "2": 10} from JSON/Params, or {1: 90, 2: 10}.

    Keys may be digit strings (JSON has no integer keys); values must already be integers."""
    if not isinstance(doc, dict) or not doc:
        raise SpecError("weights", f"{doc!r} is not a mapping of version to percent", 'e.g. {"1": 90, "2": 10}')
    out = {}
    for key, weight in doc.items():
        version = int(key) if isinstance(key, str) and key.isdigit() and not key.startswith("0") else key
        out[version] = weight
    return out


def validate_state(state: RoutingState) -> None:
    """Refuse anything a gateway must never be given; errors name the field and the fix."""
    if not isinstance(state.model, str) or not MODEL_NAME.match(state.model):
        raise SpecError("model", f"{state.model!r} is not a valid Triton model name", "use letters, digits, _ . -")
    if not isinstance(state.weights, dict) or not state.weights:
        raise SpecError("weights", "no versions given", "give at least one version with weight 100")
    for version, weight in state.weights.items():
        _version(version, "weights")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise SpecError(f"weights[{version}]", f"{weight!r} is not an integer percent", "use integers 0..100")
        if not 0 <= weight <= 100:
            raise SpecError(f"weights[{version}]", f"{weight} is outside 0..100", "use integers 0..100")
    total = sum(state.weights.values())
    if total != 100:
        raise SpecError("weights", f"weights sum to {total}, not 100", "make the percentages add up to exactly 100")
    if state.header_routes:
        if not state.header or not HEADER_NAME.match(state.header):
            raise SpecError("header", f"{state.header!r} is not a header name", "use a lower-case name like x-experiment")
        for value, version in state.header_routes.items():
            if not isinstance(value, str) or not HEADER_VALUE.match(value):
                raise SpecError("header_routes", f"value {value!r} is not a plain token", "use values like A, B, canary")
            _version(version, f"header_routes[{value}]")
    if isinstance(state.mirror_percent, bool) or not isinstance(state.mirror_percent, int) \
            or not 0 <= state.mirror_percent <= 100:
        raise SpecError("mirror_percent", f"{state.mirror_percent!r} is outside 0..100", "use an integer percent")
    if state.mirror_percent:
        _version(state.mirror_version, "mirror_version")
        if state.weights.get(state.mirror_version, 0) == 100:
            raise SpecError("mirror_version", f"v{state.mirror_version} already takes all traffic",
                            "mirror a version that is not the one serving")
