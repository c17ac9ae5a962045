"""Golden prompts: fixed questions a candidate engine must answer as expected before it ships.

A build can pass every unit test and still answer differently: a wrong tokenizer, a bad
quantization, a broken stop rule. The golden suite asks the candidate a few fixed prompts,
greedy (no sampling, so the same engine always gives the same answer), and checks each answer
against an expectation: `exact`, `contains` (substrings), `regex` (re.search) or `json` (valid
JSON, optionally an object with required keys). With `regression` on, the stable version is
asked the same prompts, turn by turn with the candidate, and the share of answers that changed
is bounded too: a greedy answer that changes is a behaviour change even when it still passes.

Generation is any callable `(prompt, max_tokens) -> text`, so this logic is tested with plain
functions; `pinned_generator` makes one that reaches exactly one version over Triton's
`/v2/models/<m>/versions/<n>/generate` (directly or through the gateway). A transport error on
a case is that case's failure, with the error, never a crash: the report is the product.

Suite files (YAML or JSON) are validated before anything is sent, and every error names its
field, e.g. `cases[3].expect.regex`. No Airflow imports here.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests
import yaml

from llm_release.errors import SpecError, TritonError
from llm_release.fsutil import write_atomically
from llm_release.metadata import check_model_name, check_version

SUITES_DIR = Path(__file__).resolve().parent / "suites"
EXPECT_KINDS = ("exact", "contains", "regex", "json")
ANSWER_LIMIT = 200  # characters of an answer kept in a report
ERROR_LIMIT = 300
MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 16
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SUITE_KEYS = {"suite", "model", "description", "pass_rate", "regression", "max_tokens",
               "temperature", "cases"}
_CASE_KEYS = {"id", "prompt", "expect", "max_tokens", "temperature", "description"}
# Settings that would turn sampling on (or change the search): a golden answer must be the one
# greedy answer of the engine, or a changed answer means nothing.
_SAMPLING_KEYS = {"top_k", "top_p", "seed", "random_seed", "sampling", "do_sample",
                  "beam_width", "num_beams"}

Generate = Callable[[str, int], str]


# -- the suite ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expectation:
    """What one answer must satisfy; `check` gives None when it does, else the reason."""

    kind: str
    value: Any = None  # exact: str; contains: tuple of str; regex: the pattern; json: None
    required_keys: tuple[str, ...] = ()

    def check(self, answer: str) -> str | None:
        if self.kind == "exact":
            return None if answer == self.value else f"expected exactly {_clip(self.value, 80)!r}"
        if self.kind == "contains":
            missing = [s for s in self.value if s not in answer]
            return None if not missing else f"does not contain {missing[0]!r}"
        if self.kind == "regex":
            return None if re.search(self.value, answer) else f"does not match regex {self.value!r}"
        return self._check_json(answer)

    def _check_json(self, answer: str) -> str | None:
        try:
            doc = json.loads(answer.strip())
        except ValueError as exc:
            return f"is not valid JSON ({getattr(exc, 'msg', exc)} at char {getattr(exc, 'pos', '?')})"
        if not self.required_keys:
            return None
        if not isinstance(doc, dict):
            return f"JSON is a {type(doc).__name__}, not an object with keys {', '.join(self.required_keys)}"
        missing = [k for k in self.required_keys if k not in doc]
        return None if not missing else f"JSON object lacks key(s) {', '.join(missing)}"

    def describe(self) -> str:
        if self.kind == "json":
            return "json" + (f" with {', '.join(self.required_keys)}" if self.required_keys else "")
        values = self.value if self.kind == "contains" else (self.value,)
        return f"{self.kind} " + " & ".join(repr(_clip(v, 40)) for v in values)


@dataclass(frozen=True)
class GoldenCase:
    id: str
    prompt: str
    expect: Expectation
    max_tokens: int


@dataclass(frozen=True)
class Regression:
    """Compare with the stable version: at most `max_changed` (a share, 0..1) of answers may differ."""

    enabled: bool = False
    max_changed: float = 0.0


@dataclass(frozen=True)
class GoldenSuite:
    name: str
    cases: tuple[GoldenCase, ...]
    pass_rate: float = 1.0
    regression: Regression = Regression()
    model: str | None = None
    source: str | None = None


def default_suite_path(model: str) -> Path:
    """The suite shipped for `model` (llm_release/quality/suites/<model>.yaml)."""
    model = check_model_name(model)
    for ext in ("yaml", "yml", "json"):
        path = SUITES_DIR / f"{model}.{ext}"
        if path.is_file():
            return path
    shipped = sorted(p.stem for p in SUITES_DIR.glob("*.y*ml")) if SUITES_DIR.is_dir() else []
    raise SpecError("model", f"no golden suite is shipped for {model!r} (shipped: {', '.join(shipped) or 'none'})",
                    "write one (see docs/quality.md) and pass its path")


def load_suite(path: str | Path) -> GoldenSuite:
    """Read and validate a suite file (.json as JSON, anything else as YAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError("suite", f"cannot read {path}: {exc.strerror or exc}", "give the path of a suite file") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError("suite", f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}",
                        "fix the file's syntax") from None
    return parse_suite(doc, source=str(path))


def parse_suite(doc: Any, *, source: str | None = None) -> GoldenSuite:
    """Validate a suite document (the parsed file); every error names its field."""
    if not isinstance(doc, dict):
        raise SpecError("suite", f"the document is a {type(doc).__name__}, not a mapping",
                        "write `suite:`, `pass_rate:` and `cases:` at the top level")
    _refuse_unknown(doc, _SUITE_KEYS, "")
    name = doc.get("suite")
    if not isinstance(name, str) or not _CASE_ID.match(name):
        raise SpecError("suite", f"{name!r} is not a suite name", "use 1-64 letters, digits, '_', '.' or '-'")
    model = doc.get("model")
    if model is not None:
        try:
            check_model_name(model)
        except SpecError:
            raise SpecError("model", f"{model!r} is not a model name",
                            "write the model's name, or leave it out") from None
    pass_rate = _pass_rate(doc.get("pass_rate", 1.0))
    regression = _regression(doc.get("regression", False))
    _no_sampling(doc, "temperature")
    default_tokens = _max_tokens(doc.get("max_tokens", DEFAULT_MAX_TOKENS), "max_tokens")
    raw_cases = doc.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise SpecError("cases", "must be a non-empty list", "add at least one case with id, prompt and expect")
    cases, seen = [], set()
    for i, raw in enumerate(raw_cases):
        case = _case(raw, f"cases[{i}]", default_tokens)
        if case.id in seen:
            raise SpecError(f"cases[{i}].id", f"{case.id!r} is used by an earlier case", "give every case its own id")
        seen.add(case.id)
        cases.append(case)
    return GoldenSuite(name=name, cases=tuple(cases), pass_rate=pass_rate, regression=regression,
                       model=model, source=source)


def _refuse_unknown(doc: dict, allowed: set[str], where: str) -> None:
    prefix = f"{where}." if where else ""
    for key in doc:
        if key in _SAMPLING_KEYS:
            raise SpecError(f"{prefix}{key}", "golden prompts run greedy; sampling settings are refused",
                            "remove it: a sampled answer differs run to run, so a changed answer would mean nothing")
    unknown = sorted(str(k) for k in set(doc) - allowed)
    if unknown:
        raise SpecError(f"{prefix}{unknown[0]}", "is not a known setting", f"known: {', '.join(sorted(allowed))}")


def _no_sampling(doc: dict, key: str, where: str = "") -> None:
    if key not in doc:
        return
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != 0:
        raise SpecError(f"{where}.{key}" if where else key, f"{value!r}: golden prompts run greedy (temperature 0)",
                        "remove it or set it to 0")


def _pass_rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= 1:
        raise SpecError("pass_rate", f"{value!r} is not a share in (0, 1]",
                        "write e.g. 1.0 (every case must pass) or 0.9")
    return float(value)


def _regression(value: Any) -> Regression:
    if isinstance(value, bool):
        return Regression(enabled=value)
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return Regression(enabled=value.lower() == "on")
    if not isinstance(value, dict):
        raise SpecError("regression", f"{value!r} is neither on/off nor a mapping",
                        "write e.g. {enabled: true, max_changed: 0.2}")
    unknown = sorted(set(value) - {"enabled", "max_changed"})
    if unknown:
        raise SpecError(f"regression.{unknown[0]}", "is not a known setting", "known: enabled, max_changed")
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError("regression.enabled", f"{enabled!r} is not true or false", "write true or false")
    share = value.get("max_changed", 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) \
            or not 0 <= share <= 1:
        raise SpecError("regression.max_changed", f"{share!r} is not a share in [0, 1]",
                        "write e.g. 0.2 (a fifth of the answers may change), 0 for none")
    return Regression(enabled=enabled, max_changed=float(share))


def _max_tokens(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise SpecError(where, f"{value!r} is not an integer in 1..{MAX_TOKENS_LIMIT}",
                        "ask for as few tokens as the expectation needs, e.g. 16")
    return value


def _case(raw: Any, where: str, default_tokens: int) -> GoldenCase:
    if not isinstance(raw, dict):
        raise SpecError(where, f"{_clip(repr(raw), 60)} is not a mapping", "write id, prompt and expect")
    _refuse_unknown(raw, _CASE_KEYS, where)
    case_id = raw.get("id")
    if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
        raise SpecError(f"{where}.id", f"{case_id!r} is not a case id", "use 1-64 letters, digits, '_', '.' or '-'")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise SpecError(f"{where}.prompt", "must be a non-empty string", "write the prompt text")
    _no_sampling(raw, "temperature", where)
    max_tokens = _max_tokens(raw.get("max_tokens", default_tokens), f"{where}.max_tokens")
    return GoldenCase(id=case_id, prompt=prompt, expect=_expectation(raw.get("expect"), f"{where}.expect"),
                      max_tokens=max_tokens)


def _expectation(raw: Any, where: str) -> Expectation:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in EXPECT_KINDS:
        raise SpecError(where, f"{_clip(repr(raw), 60)} is not one expectation",
                        f"write a mapping with exactly one of: {', '.join(EXPECT_KINDS)}")
    (kind, value), = raw.items()
    at = f"{where}.{kind}"
    if kind == "exact":
        if not isinstance(value, str) or not value:
            raise SpecError(at, "must be a non-empty string", "write the whole expected answer")
        return Expectation("exact", value)
    if kind == "contains":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise SpecError(at, f"{_clip(repr(value), 60)} is not a substring or a list of them",
                            "write a non-empty string or a list of non-empty strings")
        return Expectation("contains", tuple(values))
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise SpecError(at, "must be a non-empty pattern", "write a Python regular expression")
        try:
            re.compile(value)
        except re.error as exc:
            raise SpecError(at, f"{value!r} is not a valid regular expression ({exc})",
                            "fix the pattern (Python `re` syntax)") from None
        return Expectation("regex", value)
    # json: true, or {required_keys: [...]}
    if value is True:
        return Expectation("json")
    if isinstance(value, dict) and set(value) <= {"required_keys"}:
        keys = value.get("required_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
            raise SpecError(f"{at}.required_keys", f"{_clip(repr(keys), 60)} is not a list of key names",
                            "write e.g. [verdict, reason]")
        return Expectation("json", None, tuple(keys))
    raise SpecError(at, f"{_clip(repr(value), 60)} is neither true nor {{required_keys: [...]}}",
                    "write `json: true` or `json: {required_keys: [a, b]}`")


# -- running it --------------------------------------------------------------------------------

@dataclass
class CaseResult:
    id: str
    expect: str
    passed: bool
    answer: str | None  # truncated to the report's limit; None when the call failed
    why: str | None = None  # why it failed (expectation or error)
    error: str | None = None  # transport / server error of the candidate
    latency_ms: float | None = None
    stable_answer: str | None = None
    stable_error: str | None = None
    changed: bool | None = None  # None: not compared (regression off, or the stable version failed)


@dataclass
class RegressionResult:
    enabled: bool
    max_changed: float
    changed: int = 0
    compared: int = 0
    uncompared: int = 0  # cases the stable version could not answer
    share: float | None = None
    passed: bool = True


@dataclass
class GoldenReport:
    suite: str
    candidate: str
    stable: str | None
    threshold: float
    total: int
    passed_count: int
    pass_rate: float
    regression: RegressionResult
    passed: bool
    summary: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def failed_ids(self) -> list[str]:
        return [c.id for c in self.cases if not c.passed]

    def to_dict(self) -> dict:
        """Plain JSON types, for XCom and files."""
        doc = asdict(self)
        doc["failed_ids"] = self.failed_ids
        return doc


def run_suite(suite: GoldenSuite, generate_candidate: Generate, generate_stable: Generate | None = None, *,
              candidate_label: str = "candidate", stable_label: str = "stable",
              answer_limit: int = ANSWER_LIMIT) -> GoldenReport:
    """Ask every case of `suite`, candidate then stable per case, and judge.

    Passed overall = pass rate >= the suite's threshold AND (regression off, or every case
    compared and the share of changed answers <= max_changed). A candidate that fails to answer
    a case counts as a changed answer; a stable version that fails one leaves the case
    uncompared, and an uncompared case fails the regression check: a comparison that could not
    be made is never a pass.
    """
    if suite.regression.enabled and generate_stable is None:
        raise SpecError("generate_stable", f"suite {suite.name!r} compares answers with the stable version "
                        "(regression enabled) but no stable version was given",
                        "pass the stable version's generator, or turn regression off for a first release")
    compare = suite.regression.enabled
    results = []
    for case in suite.cases:
        answer, error, latency_ms = _ask(generate_candidate, case)
        result = CaseResult(id=case.id, expect=case.expect.describe(), passed=False,
                            answer=None if answer is None else _clip(answer, answer_limit),
                            error=error, latency_ms=latency_ms)
        if error is not None:
            result.why = f"no answer: {error}"
        else:
            result.why = case.expect.check(answer)
            result.passed = result.why is None
        if compare:
            stable_answer, stable_error, _ = _ask(generate_stable, case)
            result.stable_answer = None if stable_answer is None else _clip(stable_answer, answer_limit)
            result.stable_error = stable_error
            if stable_error is None:
                result.changed = error is not None or answer != stable_answer
        results.append(result)
    return _report(suite, results, candidate_label, stable_label if compare else None)


def _ask(generate: Generate, case: GoldenCase) -> tuple[str | None, str | None, float | None]:
    started = time.perf_counter()
    try:
        answer = generate(case.prompt, case.max_tokens)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is this case's failure, with its reason
        return None, _clip(f"{type(exc).__name__}: {exc}", ERROR_LIMIT), None
    latency_ms = round((time.perf_counter() - started) * 1000.0, 2)
    if not isinstance(answer, str):
        return None, f"the generator returned {type(answer).__name__}, not text", latency_ms
    return answer, None, latency_ms


def _report(suite: GoldenSuite, results: list[CaseResult], candidate: str, stable: str | None) -> GoldenReport:
    total = len(results)
    passed_count = sum(r.passed for r in results)
    pass_rate = passed_count / total
    regression = RegressionResult(enabled=suite.regression.enabled, max_changed=suite.regression.max_changed)
    if regression.enabled:
        regression.compared = sum(r.changed is not None for r in results)
        regression.uncompared = total - regression.compared
        regression.changed = sum(bool(r.changed) for r in results)
        regression.share = round(regression.changed / total, 4)
        regression.passed = regression.uncompared == 0 and regression.changed / total <= regression.max_changed
    rate_ok = pass_rate >= suite.pass_rate
    passed = rate_ok and regression.passed
    report = GoldenReport(suite=suite.name, candidate=candidate, stable=stable, threshold=suite.pass_rate,
                          total=total, passed_count=passed_count, pass_rate=round(pass_rate, 4),
                          regression=regression, passed=passed, summary="", cases=results)
    report.summary = _summary(report, rate_ok)
    return report


def _summary(report: GoldenReport, rate_ok: bool) -> str:
    """One sentence: the verdict, the pass rate against its threshold, the failed ids, the drift."""
    pct = lambda x: f"{x * 100:.0f}%"  # noqa: E731
    parts = [f"{report.passed_count} of {report.total} cases passed "
             f"({pct(report.pass_rate)} {'>=' if rate_ok else '<'} {pct(report.threshold)} needed)"]
    if report.failed_ids:
        parts[0] += f", failed: {', '.join(report.failed_ids)}"
    reg = report.regression
    if not reg.enabled:
        parts.append("no comparison with the stable version (regression off)")
    elif reg.uncompared:
        parts.append(f"regression not judged: the stable version did not answer {reg.uncompared} of "
                     f"{report.total} cases")
    else:
        ok = reg.changed / report.total <= reg.max_changed
        parts.append(f"{reg.changed} of {report.total} answers changed from the stable version "
                     f"({pct(reg.changed / report.total)} {'<=' if ok else '>'} max {pct(reg.max_changed)})")
    verdict = "PASS" if report.passed else "FAIL"
    return f"{verdict}: golden suite {report.suite} on {report.candidate}: " + "; ".join(parts) + "."


# -- reaching one version ----------------------------------------------------------------------

TritonModelMap = Callable[[str, int], "tuple[str, int] | str"]


def model_per_release(suffix: str = "_r") -> TritonModelMap:
    """The mapping of the model-per-release topology: release N of m is Triton model m<suffix>N, version 1."""
    return lambda model, version: (f"{model}{suffix}{version}", 1)


def pinned_model(model: str, version: int, triton_model: TritonModelMap | None = None) -> tuple[str, int]:
    """The Triton (model, version) serving release `version` of `model`.

    `triton_model` may return a (name, version) pair, or only a name as
    `Environment.triton_model` does: then the version is kept when the name is the model's own
    (versions side by side, a deployment per version) and is 1 otherwise (a model per release).
    """
    model, version = check_model_name(model), check_version(version)
    if triton_model is None:
        return model, version
    mapped = triton_model(model, version)
    if isinstance(mapped, str):
        name, served = mapped, (version if mapped == model else 1)
    elif isinstance(mapped, tuple) and len(mapped) == 2:
        name, served = mapped
    else:
        raise SpecError("triton_model", f"the mapping returned {mapped!r}", "return (name, version) or a model name")
    return check_model_name(name), check_version(served)


def pinned_generator(base_url: str, model: str, version: int, *, triton_model: TritonModelMap | None = None,
                     timeout_s: float = 60.0, session: requests.Session | None = None) -> Generate:
    """(prompt, max_tokens) -> text from exactly one version, over `/v2/models/<m>/versions/<n>/generate`.

    `base_url` is Triton's HTTP endpoint or the gateway's (which routes the pinned path to that
    version only). No sampling input is sent, so the engine decodes greedily. Raises TritonError
    on anything but a 200 answered by that version with text; run_suite records it per case.
    """
    name, served = pinned_model(model, version, triton_model)
    url = f"{base_url.rstrip('/')}/v2/models/{name}/versions/{served}/generate"
    http = session or requests.Session()

    def generate(prompt: str, max_tokens: int) -> str:
        try:
            resp = http.post(url, json={"text_input": prompt, "max_tokens": max_tokens}, timeout=timeout_s)
        except requests.RequestException as exc:
            raise TritonError(f"{name} v{served} unreachable at {url}: {exc}") from None
        if resp.status_code != 200:
            raise TritonError(f"HTTP {resp.status_code} from {name} v{served}: {_error_text(resp)}")
        try:
            doc = resp.json()
        except ValueError:
            raise TritonError(f"{url} answered 200 with a body that is not JSON: {resp.text[:120]!r}") from None
        if str(doc.get("model_version")) != str(served):
            raise TritonError(f"{url} was answered by version {doc.get('model_version')!r}, not {served}")
        text = doc.get("text_output")
        if not isinstance(text, str):
            raise TritonError(f"{url} answered without text_output: {_clip(json.dumps(doc), 120)}")
        return text

    generate.url = url  # type: ignore[attr-defined]  # for reports and logs
    return generate


def _error_text(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text.strip()[:ERROR_LIMIT] or "(empty body)"
    return str(doc.get("error", doc))[:ERROR_LIMIT] if isinstance(doc, dict) else str(doc)[:ERROR_LIMIT]


# -- writing it down ---------------------------------------------------------------------------

def write_report(report: GoldenReport, path: str | Path) -> tuple[Path, Path]:
    """`path` (JSON, atomic) and a Markdown table beside it (same name, .md); returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    md_path = path.with_suffix(".md")
    write_atomically(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", mode=0o644)
    write_atomically(md_path, render_markdown(report), mode=0o644)
    return path, md_path


def render_markdown(report: GoldenReport) -> str:
    compare = report.regression.enabled
    lines = [f"# Golden suite {report.suite}: {'PASS' if report.passed else 'FAIL'}", "", report.summary, ""]
    header = ["case", "expect", "result", "answer", "why"] + (["stable answer", "changed"] if compare else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.cases:
        row = [r.id, r.expect, "pass" if r.passed else "FAIL", _cell(r.answer, 60), _cell(r.why, 160)]
        if compare:
            stable = r.stable_answer if r.stable_error is None else f"error: {r.stable_error}"
            row += [_cell(stable, 60), {True: "yes", False: "no", None: "?"}[r.changed]]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str | None, limit: int) -> str:
    if text is None:
        return ""
    shown = json.dumps(_clip(text, limit), ensure_ascii=False)[1:-1]  # newlines etc. visible, one line
    return shown.replace("|", "\\|")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
