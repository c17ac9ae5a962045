"""The release spec: what to release, where, and how; validated before anything moves.

One definition (FIELDS) gives both the validation here and the JSON schema of the Airflow
trigger form (`params_schema()`, turned into Params by the DAG), so the form and the core can
never disagree about a field. Errors name the field and the fix: a model name with shell
characters, version "latest", steps that do not increase or go past 100 are refused before any
traffic moves.

Strategies:
- canary: ordinary traffic moves through `steps` (percent to the candidate), each step judged;
  the last step is 100 (added when missing) and is the promotion.
- blue_green: the idle candidate is judged on a full mirror of live traffic (no client sees its
  answers), then all traffic switches to it at once; the old version stays loaded.
- shadow: the candidate is judged on mirrored copies at each of `steps` (mirror percent); the
  clients never see it and the routing ends as it began. An evaluation, never a promotion.
- ab: requests carrying `ab_header: ab_value` go to the candidate (the B arm), the rest to the
  stable version (A); the arms are compared for one soak and the routes removed at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from llm_release.errors import SpecError
from llm_release.routing.state import HEADER_NAME, HEADER_VALUE, MODEL_NAME

STRATEGIES = ("canary", "blue_green", "shadow", "ab")
ON_FAILURE = ("keep_loaded", "unload")
ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
USER = re.compile(r"^[A-Za-z0-9_.@+-]{1,128}$")


@dataclass(frozen=True)
class Field:
    name: str
    schema: dict
    default: object
    title: str
    description: str
    section: str | None = None


FIELDS = (
    Field("model", {"type": "string", "pattern": MODEL_NAME.pattern}, None, "Model",
          "The Triton model name clients call at the gateway (letters, digits, _ . -)."),
    Field("version", {"type": "integer", "minimum": 1}, None, "Version",
          "The exact version to release (a published version number; never 'latest')."),
    Field("environment", {"type": "string", "pattern": ENV_NAME.pattern}, "staging", "Environment",
          "Where to release: an environment of the llm_release_environments Variable (e.g. staging, production)."),
    Field("region", {"type": ["null", "string"], "pattern": ENV_NAME.pattern}, None, "Region",
          "The environment's region; empty when it has only one."),
    Field("strategy", {"type": "string", "enum": list(STRATEGIES)}, "canary", "Strategy",
          "canary: traffic steps; blue_green: judged on a mirror, then switched; shadow: judged on mirrored "
          "copies only (no promotion); ab: a header-routed B arm compared with A."),
    Field("steps", {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 1},
          [1, 10, 50, 100], "Steps",
          "canary: percent of traffic to the candidate at each step, increasing, ending at 100; shadow: mirror "
          "percent at each step.", "Traffic"),
    Field("min_soak_s", {"type": "number", "minimum": 0}, 60, "Minimum soak per step (s)",
          "A step passes only after this long, even when the judge is sure earlier; a FAIL ends it at once.",
          "Traffic"),
    Field("max_soak_s", {"type": "number", "exclusiveMinimum": 0}, 1800, "Maximum soak per step (s)",
          "Still inconclusive after this long, the step fails and the release rolls back.", "Traffic"),
    Field("baseline", {"type": ["null", "integer"], "minimum": 1}, None, "Stable version",
          "The version the candidate is compared with and rolled back to; empty: the one serving most traffic now.",
          "Traffic"),
    Field("ab_header", {"type": "string", "pattern": HEADER_NAME.pattern}, "x-experiment", "A/B header",
          "ab: the request header that selects the B arm.", "Traffic"),
    Field("ab_value", {"type": "string", "pattern": HEADER_VALUE.pattern}, "B", "A/B header value",
          "ab: requests with this header value go to the candidate.", "Traffic"),
    Field("artifact_digest", {"type": ["null", "string"], "pattern": DIGEST.pattern}, None, "Artifact digest",
          "The published manifest's digest (sha256:...). Empty: read from the artifact store; given: must match it.",
          "Checks"),
    Field("analysis", {"type": "object"}, {}, "Judge settings",
          "Gate thresholds and judge settings for this release (see docs/analysis.md), e.g. "
          '{"gates": {"error_rate": {"max": 0.02}}}.', "Checks"),
    Field("approvers", {"type": "array", "items": {"type": "string", "pattern": USER.pattern}}, [], "Approvers",
          "Airflow user ids who may approve the final step where the environment requires approval; empty: any "
          "user allowed to act on the DAG.", "Approval"),
    Field("approval_timeout_s", {"type": "number", "minimum": 60}, 4 * 3600, "Approval timeout (s)",
          "No answer within this long rolls the release back.", "Approval"),
    Field("on_failure", {"type": "string", "enum": list(ON_FAILURE)}, "keep_loaded", "After a rollback",
          "keep_loaded: leave the candidate loaded (no traffic) for inspection; unload: unload it from Triton.",
          "Approval"),
    Field("lease_wait_s", {"type": "number", "minimum": 0}, 0, "Wait for a running release (s)",
          "Another release of this model in this environment holds the lease: wait up to this long; 0 refuses at "
          "once, naming the run that holds it.", "Approval"),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)


def params_schema() -> dict[str, dict]:
    """name -> keyword arguments of an Airflow Param (default, JSON schema, title, description, section)."""
    out = {}
    for f in FIELDS:
        kwargs = dict(f.schema, title=f.title, description=f.description)
        if f.section:
            kwargs["section"] = f.section
        out[f.name] = {"default": f.default, **kwargs}
    return out


def _integer(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        hint = "name the exact version number, e.g. 3" if name == "version" else "give a whole number"
        raise SpecError(name, f"{value!r} is not a whole number", hint)
    if (low is not None and value < low) or (high is not None and value > high):
        raise SpecError(name, f"{value} is outside {low}..{high if high is not None else '∞'}", "give a value in range")
    return value


def _number(value, name: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < low:
        raise SpecError(name, f"{value!r} is not a number >= {low:g}", "give seconds")
    return float(value)


@dataclass(frozen=True)
class ReleaseSpec:
    model: str
    version: int
    environment: str = "staging"
    region: str | None = None
    strategy: str = "canary"
    steps: tuple[int, ...] = (1, 10, 50, 100)
    min_soak_s: float = 60.0
    max_soak_s: float = 1800.0
    baseline: int | None = None
    ab_header: str = "x-experiment"
    ab_value: str = "B"
    artifact_digest: str | None = None
    analysis: dict = field(default_factory=dict)
    approvers: tuple[str, ...] = ()
    approval_timeout_s: float = 4 * 3600.0
    on_failure: str = "keep_loaded"
    lease_wait_s: float = 0.0

    @classmethod
    def from_dict(cls, doc) -> "ReleaseSpec":
        """Validate a spec (trigger-form params, a JSON file); unknown keys are refused, not ignored."""
        if not isinstance(doc, dict):
            raise SpecError("release", f"{doc!r} is not an object", "give the release's parameters")
        unknown = sorted(set(doc) - set(FIELD_NAMES))
        if unknown:
            raise SpecError(unknown[0], "is not a release parameter", f"known: {', '.join(FIELD_NAMES)}")
        values = {f.name: doc.get(f.name, f.default) for f in FIELDS}
        model = values["model"]
        if not isinstance(model, str) or not MODEL_NAME.match(model):
            raise SpecError("model", f"{model!r} is not a Triton model name",
                            "use letters, digits, _ . - (no spaces or shell characters)")
        version = values["version"]
        if isinstance(version, str) and not version.strip().isdigit():
            raise SpecError("version", f"{version!r} is not a version number",
                            "name the exact published version, e.g. 3: a release never resolves 'latest'")
        version = _integer(version, "version", low=1)
        for key in ("environment", "region"):
            value = values[key]
            if value is None and key == "region":
                continue
            if not isinstance(value, str) or not ENV_NAME.match(value):
                raise SpecError(key, f"{value!r} is not a valid {key} name", "use lower-case letters, digits, - and _")
        if values["strategy"] not in STRATEGIES:
            raise SpecError("strategy", f"{values['strategy']!r} is not a strategy", f"use one of {', '.join(STRATEGIES)}")
        steps = _steps(values["steps"], values["strategy"])
        min_soak = _number(values["min_soak_s"], "min_soak_s")
        max_soak = _number(values["max_soak_s"], "max_soak_s")
        if max_soak <= 0 or max_soak < min_soak:
            raise SpecError("max_soak_s", f"{max_soak:g} s is below min_soak_s {min_soak:g} s",
                            "give a maximum soak at least as long as the minimum")
        baseline = values["baseline"]
        if baseline is not None:
            baseline = _integer(baseline, "baseline", low=1)
            if baseline == version:
                raise SpecError("baseline", f"the stable version and the candidate are both v{version}",
                                "name the version serving now, or leave it empty")
        if not isinstance(values["ab_header"], str) or not HEADER_NAME.match(values["ab_header"]):
            raise SpecError("ab_header", f"{values['ab_header']!r} is not a header name", "use e.g. x-experiment")
        if not isinstance(values["ab_value"], str) or not HEADER_VALUE.match(values["ab_value"]):
            raise SpecError("ab_value", f"{values['ab_value']!r} is not a plain token", "use e.g. B")
        digest = values["artifact_digest"]
        if digest is not None and (not isinstance(digest, str) or not DIGEST.match(digest)):
            raise SpecError("artifact_digest", f"{digest!r} is not a sha256 digest", "write sha256:<64 hex digits>")
        analysis = values["analysis"] or {}
        if not isinstance(analysis, dict):
            raise SpecError("analysis", f"{analysis!r} is not an object", "give the judge's settings as JSON")
        from llm_release.analysis.config import JudgeConfig

        JudgeConfig.from_dict(analysis)  # its errors name the setting
        approvers = values["approvers"] or []
        if not isinstance(approvers, (list, tuple)) or not all(isinstance(a, str) and USER.match(a) for a in approvers):
            raise SpecError("approvers", f"{approvers!r} is not a list of user ids", 'write e.g. ["alice", "bob"]')
        approval_timeout = _number(values["approval_timeout_s"], "approval_timeout_s", low=60.0)
        if values["on_failure"] not in ON_FAILURE:
            raise SpecError("on_failure", f"{values['on_failure']!r} is not an option", f"use one of {', '.join(ON_FAILURE)}")
        return cls(model=model, version=version, environment=values["environment"], region=values["region"],
                   strategy=values["strategy"], steps=steps, min_soak_s=min_soak, max_soak_s=max_soak,
                   baseline=baseline, ab_header=values["ab_header"], ab_value=values["ab_value"],
                   artifact_digest=digest, analysis=dict(analysis), approvers=tuple(approvers),
                   approval_timeout_s=approval_timeout, on_failure=values["on_failure"],
                   lease_wait_s=_number(values["lease_wait_s"], "lease_wait_s"))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["steps"], out["approvers"] = list(self.steps), list(self.approvers)
        return out


def _steps(value, strategy: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError("steps", f"{value!r} is not a list of percentages", "write e.g. [1, 10, 50, 100]")
    steps = []
    for i, step in enumerate(value):
        if isinstance(step, bool) or not isinstance(step, int):
            raise SpecError(f"steps[{i}]", f"{step!r} is not a whole percent", "write e.g. [1, 10, 50, 100]")
        if not 1 <= step <= 100:
            raise SpecError(f"steps[{i}]", f"{step} is outside 1..100", "a step is a percent of traffic, 1 to 100")
        if steps and step <= steps[-1]:
            raise SpecError(f"steps[{i}]", f"{step} does not increase on {steps[-1]}",
                            "list the percentages in increasing order, e.g. [1, 10, 50, 100]")
        steps.append(step)
    if strategy == "canary" and steps[-1] != 100:
        steps.append(100)  # the promotion is the last step
    return tuple(steps)
