"""Checks of a candidate before it is published: golden prompts and the perf bench.

Thin over llm_release.quality and llm_release.perf. Each takes the candidate (what
CandidateOperator's install returned: where it is served and the stable version beside it),
writes its report files under `report_dir`, logs the verdict in a sentence, and either returns
the candidate with its result added (so the next check, and publish, expand over it) or fails
the task naming what failed: a failed check is permanent, retrying the same engine cannot pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_release_airflow.retry_policy import PermanentTaskError, ReleaseOperator


def _report_dir(report_dir: str, candidate: dict) -> str:
    return f"{report_dir.rstrip('/')}/{candidate['model']}/v{candidate['version']}"


class GoldenPromptOperator(ReleaseOperator):
    """Ask the golden suite of exactly the candidate version (its pinned path) and compare its
    answers with the stable version's; fail naming the prompts that failed.

    :param candidate: CandidateOperator's install result.
    :param suite: path of the suite file; empty: the suite shipped for the model.
    :param report_dir: where golden.json / golden.md are written (per model and version below it).
    """

    template_fields: Sequence[str] = ("candidate", "suite", "report_dir")
    ui_color = "#fdd49e"

    def __init__(self, *, candidate, report_dir: str, suite: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.candidate = candidate
        self.suite = suite
        self.report_dir = report_dir

    def execute(self, context) -> dict:
        import dataclasses

        from llm_release.quality.golden import default_suite_path, load_suite, pinned_generator, run_suite, write_report

        cand = dict(self.candidate)
        suite = load_suite(self.suite or default_suite_path(cand["model"]))
        url = cand["triton_url"]
        candidate_gen = pinned_generator(url, cand["triton_model"], cand["triton_version"])
        stable_gen = None
        if cand.get("stable"):
            stable_gen = pinned_generator(url, cand["stable_triton_model"], cand["stable_triton_version"])
        elif suite.regression.enabled:
            self.log.info("No stable version of %s serves yet (first release): answers are checked, not compared",
                          cand["model"])
            suite = dataclasses.replace(suite, regression=dataclasses.replace(suite.regression, enabled=False))
        report = run_suite(suite, candidate_gen, stable_gen, candidate_label=f"v{cand['version']}",
                           stable_label=f"v{cand['stable']}" if cand.get("stable") else "stable")
        json_path, md_path = write_report(report, f"{_report_dir(self.report_dir, cand)}/golden.json")
        self.log.info("Golden suite %s on %s v%s: %s (report %s)", report.suite, cand["model"], cand["version"],
                      report.summary, md_path)
        if not report.passed:
            raise PermanentTaskError(f"{cand['model']} v{cand['version']} failed the golden suite {report.suite}: "
                                     f"{report.summary}; failed prompts: {', '.join(report.failed_ids) or 'none'} "
                                     f"(regression: {report.regression.changed} of {report.regression.compared} "
                                     f"answers changed); report {md_path}")
        return {**cand, "golden": {"passed": True, "suite": report.suite, "total": report.total,
                                   "pass_rate": report.pass_rate, "stable_version": cand.get("stable"),
                                   "changed": report.regression.changed, "report_path": str(json_path),
                                   "summary": report.summary}}


class PerfBenchOperator(ReleaseOperator):
    """Streaming load through tritonclient against the candidate and the stable version, level
    by level back to back; fail when the candidate regresses beyond the gates.

    :param candidate: the previous check's result (CandidateOperator's install result and more).
    :param concurrencies: streaming clients per level.
    :param requests_per_level: requests per version and level (>= 50 for steady p95s).
    :param gates: max regression per metric (llm_release.perf.report.parse_gates); empty: defaults.
    :param report_dir: where perf_verdict.json and perf_bench.svg are written.
    """

    template_fields: Sequence[str] = ("candidate", "concurrencies", "requests_per_level", "gates", "report_dir")
    ui_color = "#fdd49e"

    def __init__(self, *, candidate, report_dir: str, concurrencies=(1, 2), requests_per_level=50,
                 gates: dict | None = None, grpc_url: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.candidate = candidate
        self.concurrencies = concurrencies
        self.requests_per_level = requests_per_level
        self.gates = gates
        self.report_dir = report_dir
        self.grpc_url = grpc_url

    def execute(self, context) -> dict:
        from llm_release.perf.bench import BenchTarget, bench_pair, run_bench
        from llm_release.perf.report import compare, parse_gates, write_bench_report

        cand = dict(self.candidate)
        gates = dict(self.gates or {})
        parse_gates(gates)  # refuse a misspelt gate before any load is sent
        grpc_url = self.grpc_url or self._grpc_url(cand)
        levels = [int(c) for c in self.concurrencies]
        limits = {"max_input_len": cand.get("max_input_len"), "max_seq_len": cand.get("max_seq_len")}

        def target(name, version, label):
            return BenchTarget(grpc_url, name, version, label=label, triton_model=lambda m, v: (m, v), **limits)

        candidate = target(cand["triton_model"], cand["triton_version"], f"candidate v{cand['version']}")
        load = {"concurrencies": levels, "requests_per_level": int(self.requests_per_level)}
        if cand.get("stable"):
            stable = target(cand["stable_triton_model"], cand["stable_triton_version"], f"stable v{cand['stable']}")
            cand_result, stable_result = bench_pair(candidate, stable, **load)
        else:
            self.log.info("No stable version of %s serves yet (first release): the bench measures the candidate and "
                          "the gates compare it with itself", cand["model"])
            cand_result = stable_result = run_bench(candidate, **load)
        verdict = compare(cand_result, stable_result, gates or None)
        paths = write_bench_report(verdict, _report_dir(self.report_dir, cand))
        doc = verdict.to_dict() if hasattr(verdict, "to_dict") else dict(verdict)
        self.log.info("Perf bench of %s v%s against %s: %s (report %s, plot %s)", cand["model"], cand["version"],
                      f"v{cand['stable']}" if cand.get("stable") else "itself", doc.get("summary"), paths["json"],
                      paths["svg"])
        if not doc.get("passed"):
            raise PermanentTaskError(f"{cand['model']} v{cand['version']} failed the perf bench: {doc.get('summary')}; "
                                     f"report {paths['json']}")
        return {**cand, "perf": {"passed": True, "stable_version": cand.get("stable"), "summary": doc.get("summary"),
                                 "report_path": str(paths["json"]), "plot_path": str(paths["svg"]),
                                 "levels": levels}}

    @staticmethod
    def _grpc_url(cand: dict) -> str:
        from llm_release.errors import SpecError
        from llm_release_airflow.hooks.environments import load_environments

        name, _, region = cand["environment"].partition("/")
        env = load_environments().get(name, region or None)
        grpc_url = getattr(env.triton, "grpc_url", None)
        if not grpc_url:
            raise SpecError("triton.grpc_url", f"environment {cand['environment']} names no Triton gRPC endpoint",
                            "set grpc_url (host:port) in its Triton settings, or the triton connection's extra")
        return grpc_url
