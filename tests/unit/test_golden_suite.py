"""Golden suites: validation by field, each expectation kind, pass rate and regression, reports."""

import json

import pytest

from llm_release.errors import SpecError
from llm_release.quality.golden import (
    default_suite_path,
    load_suite,
    model_per_release,
    parse_suite,
    pinned_model,
    run_suite,
    write_report,
)


def suite_doc(*cases, **top):
    doc = {"suite": "s1", "pass_rate": 1.0, "cases": list(cases) or [case("a")]}
    doc.update(top)
    return doc


def case(case_id, prompt="Hello", expect=None, **extra):
    return {"id": case_id, "prompt": prompt, "expect": expect or {"contains": "x"}, **extra}


def answers(table, default="x"):
    """A generator answering from a prompt -> text table (an Exception value is raised)."""
    def generate(prompt, max_tokens):
        value = table.get(prompt, default)
        if isinstance(value, Exception):
            raise value
        return value
    return generate


# -- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, field", [
    ([1, 2], "suite"),
    (suite_doc(suite=""), "suite"),
    (suite_doc(pass_rate=0), "pass_rate"),
    (suite_doc(pass_rate=1.5), "pass_rate"),
    (suite_doc(pass_rate=True), "pass_rate"),
    (suite_doc(regression={"enabled": True, "max_changed": 2}), "regression.max_changed"),
    (suite_doc(regression={"enabled": "yes"}), "regression.enabled"),
    (suite_doc(regression={"limit": 1}), "regression.limit"),
    (suite_doc(regression=3), "regression"),
    (suite_doc(cases=[]), "cases"),
    (suite_doc(colour="red"), "colour"),
    (suite_doc(temperature=0.7), "temperature"),
    (suite_doc(top_p=0.9), "top_p"),
    (suite_doc(max_tokens=0), "max_tokens"),
    (suite_doc(case("a"), case("b"), case("c"), case("d", expect={"regex": "("})), "cases[3].expect.regex"),
    (suite_doc(case("a"), case("b", expect={"contains": "x", "exact": "y"})), "cases[1].expect"),
    (suite_doc(case("a", expect={"fuzzy": "x"})), "cases[0].expect"),
    (suite_doc(case("a", expect="x")), "cases[0].expect"),
    (suite_doc(case("a", expect={"exact": ""})), "cases[0].expect.exact"),
    (suite_doc(case("a", expect={"contains": ["ok", ""]})), "cases[0].expect.contains"),
    (suite_doc(case("a", expect={"json": {"required_keys": "k"}})), "cases[0].expect.json.required_keys"),
    (suite_doc(case("a", expect={"json": False})), "cases[0].expect.json"),
    (suite_doc(case("a"), case("a")), "cases[1].id"),
    (suite_doc(case("bad id!")), "cases[0].id"),
    (suite_doc(case("a", prompt="")), "cases[0].prompt"),
    (suite_doc(case("a", max_tokens=-1)), "cases[0].max_tokens"),
    (suite_doc(case("a", temperature=1.0)), "cases[0].temperature"),
    (suite_doc(case("a", seed=3)), "cases[0].seed"),
    (suite_doc(case("a", top_k=40)), "cases[0].top_k"),
    (suite_doc(case("a", stop="x")), "cases[0].stop"),
])
def test_a_bad_suite_is_refused_naming_the_field(doc, field):
    with pytest.raises(SpecError) as err:
        parse_suite(doc)
    assert err.value.field == field


def test_sampling_is_refused_with_the_reason():
    with pytest.raises(SpecError) as err:
        parse_suite(suite_doc(case("a", top_p=0.9)))
    assert "greedy" in str(err.value)


def test_defaults_and_explicit_greedy_settings_are_accepted():
    suite = parse_suite(suite_doc(case("a", temperature=0), case("b", max_tokens=3), max_tokens=7,
                                  regression="on", temperature=0.0))
    assert [c.max_tokens for c in suite.cases] == [7, 3]
    assert suite.regression.enabled and suite.regression.max_changed == 0.0
    assert not parse_suite(suite_doc()).regression.enabled


def test_load_suite_reads_yaml_and_json_and_names_bad_files(tmp_path):
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text('suite: y\ncases:\n  - {id: a, prompt: "Hi", expect: {exact: "\\nok"}}\n')
    assert load_suite(yaml_file).cases[0].expect.value == "\nok"
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps(suite_doc()))
    assert load_suite(json_file).name == "s1"
    broken = tmp_path / "b.yaml"
    broken.write_text("suite: [unclosed\n")
    for path in (broken, tmp_path / "missing.yaml"):
        with pytest.raises(SpecError) as err:
            load_suite(path)
        assert err.value.field == "suite"


def test_the_shipped_suite_is_found_by_model_and_is_valid():
    suite = load_suite(default_suite_path("reference_lm"))
    assert suite.name == "reference_lm" and suite.regression.enabled
    assert {c.expect.kind for c in suite.cases} >= {"exact", "contains", "regex"}
    with pytest.raises(SpecError) as err:
        default_suite_path("no_such_model")
    assert err.value.field == "model"


# -- expectations ------------------------------------------------------------------------------

@pytest.mark.parametrize("expect, answer, passed", [
    ({"exact": "yes"}, "yes", True),
    ({"exact": "yes"}, "yes ", False),
    ({"contains": "the"}, "on the way", True),
    ({"contains": ["the", "way"]}, "on the road", False),
    ({"regex": r"^\d{3}$"}, "123", True),
    ({"regex": r"^\d{3}$"}, "1234", False),
    ({"regex": "b"}, "abc", True),  # search, not a full match
    ({"json": True}, ' {"a": 1}\n', True),
    ({"json": True}, "[1, 2]", True),
    ({"json": True}, "{'a': 1}", False),
    ({"json": {"required_keys": ["a", "b"]}}, '{"a": 1, "b": null}', True),
    ({"json": {"required_keys": ["a", "b"]}}, '{"a": 1}', False),
    ({"json": {"required_keys": ["a"]}}, "[1]", False),
])
def test_each_expectation_kind(expect, answer, passed):
    suite = parse_suite(suite_doc(case("c", prompt="p", expect=expect)))
    report = run_suite(suite, answers({"p": answer}))
    assert report.passed is passed
    assert report.cases[0].passed is passed
    assert (report.cases[0].why is None) is passed


def test_why_says_what_was_missing():
    suite = parse_suite(suite_doc(case("c", prompt="p", expect={"json": {"required_keys": ["verdict"]}})))
    assert "verdict" in run_suite(suite, answers({"p": '{"x": 1}'})).cases[0].why


# -- pass rate and regression -------------------------------------------------------------------

def four_cases(**top):
    return parse_suite(suite_doc(*(case(f"c{i}", prompt=f"p{i}", expect={"contains": "ok"}) for i in range(4)),
                                 **top))


def test_pass_rate_threshold_and_the_failed_ids_in_the_summary():
    generate = answers({"p0": "ok", "p1": "ok", "p2": "ok", "p3": "nope"})
    assert not run_suite(four_cases(pass_rate=1.0), generate).passed
    report = run_suite(four_cases(pass_rate=0.75), generate)
    assert report.passed and report.pass_rate == 0.75 and report.failed_ids == ["c3"]
    strict = run_suite(four_cases(pass_rate=0.8), generate)
    assert not strict.passed
    assert strict.summary.startswith("FAIL") and "c3" in strict.summary and "75%" in strict.summary


def test_regression_counts_changed_answers_against_the_limit():
    suite = four_cases(regression={"enabled": True, "max_changed": 0.25})
    candidate = answers({"p0": "ok", "p1": "ok", "p2": "ok!", "p3": "ok"})
    same = answers({"p0": "ok", "p1": "ok", "p2": "ok!", "p3": "ok"})
    one_changed = answers({"p0": "ok", "p1": "ok", "p2": "ok", "p3": "ok"})
    two_changed = answers({"p0": "ok", "p1": "ok?", "p2": "ok", "p3": "ok"})
    assert run_suite(suite, candidate, same).regression.changed == 0
    report = run_suite(suite, candidate, one_changed)
    assert report.passed and report.regression.changed == 1 and report.cases[2].changed
    report = run_suite(suite, candidate, two_changed)
    assert not report.passed and report.pass_rate == 1.0  # every case passes, yet too much changed
    assert "2 of 4 answers changed" in report.summary and report.summary.startswith("FAIL")


def test_regression_needs_a_stable_version_and_is_skipped_when_off():
    with pytest.raises(SpecError) as err:
        run_suite(four_cases(regression=True), answers({}, "ok"))
    assert err.value.field == "generate_stable"
    calls = []
    report = run_suite(four_cases(), answers({}, "ok"), lambda p, n: calls.append(p) or "other")
    assert report.passed and calls == [] and report.cases[0].changed is None


def test_a_transport_error_fails_its_case_with_the_error_not_the_run():
    generate = answers({"p1": ConnectionError("refused by 127.0.0.1:1")}, "ok")
    report = run_suite(four_cases(pass_rate=0.5, regression=True), generate, answers({}, "ok"))
    bad = report.cases[1]
    assert not bad.passed and bad.answer is None and "refused by 127.0.0.1:1" in bad.error
    assert bad.changed is True  # the stable version answered, the candidate did not
    assert report.failed_ids == ["c1"] and not report.passed  # one change of four > max_changed 0


def test_a_stable_version_that_cannot_answer_leaves_regression_unjudged():
    stable = answers({"p0": TimeoutError("stable timed out")}, "ok")
    report = run_suite(four_cases(regression={"enabled": True, "max_changed": 1.0}), answers({}, "ok"), stable)
    assert report.pass_rate == 1.0 and not report.passed
    assert report.regression.uncompared == 1 and report.cases[0].changed is None
    assert "not judged" in report.summary


def test_non_text_answers_fail_the_case():
    report = run_suite(four_cases(pass_rate=0.5), lambda p, n: None)
    assert report.passed_count == 0 and "not text" in report.cases[0].error


def test_long_answers_are_truncated_in_the_report_but_judged_whole():
    long = "ok" + "z" * 1000
    suite = parse_suite(suite_doc(case("c", prompt="p", expect={"regex": "z{1000}$"})))
    report = run_suite(suite, answers({"p": long}), answer_limit=50)
    assert report.passed and len(report.cases[0].answer) == 51


def test_write_report_gives_json_and_a_table(tmp_path):
    generate = answers({"p0": "ok", "p1": "no|pe\n", "p2": "ok", "p3": "ok"})
    report = run_suite(four_cases(regression=True, pass_rate=0.5), generate, answers({}, "ok"))
    json_path, md_path = write_report(report, tmp_path / "out" / "golden.json")
    doc = json.loads(json_path.read_text())
    assert doc["passed"] is False and doc["failed_ids"] == ["c1"] and doc["regression"]["changed"] == 1
    table = md_path.read_text()
    assert "| c1 |" in table and "FAIL" in table and "no\\|pe\\n" in table  # one row, pipes escaped


def test_pinned_model_covers_both_topologies():
    assert pinned_model("m", 3) == ("m", 3)
    assert pinned_model("m", 3, model_per_release()) == ("m_r3", 1)
    # Environment.triton_model returns a name only
    assert pinned_model("m", 3, lambda m, v: f"{m}_r{v}") == ("m_r3", 1)
    assert pinned_model("m", 3, lambda m, v: m) == ("m", 3)
    with pytest.raises(SpecError):
        pinned_model("m", 0)
