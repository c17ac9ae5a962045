"""Nightly: build the engines that need it, test them against golden prompts and the stable
version's performance, and publish the ones that pass.

One plan task reads the artifact store once and decides, per model and variant (precision x
tp from the trigger form), whether tonight's inputs (checkpoint digest, build parameters,
builder, image) differ from the newest published version's; unchanged lines build nothing.
Every line to build is then mapped through: build (reference builder here, TensorRT-LLM on a
GPU pod in production) -> install and load as a candidate in the test environment, beside the
stable version, with no traffic -> golden prompts through the candidate's pinned path, compared
with the stable version's answers -> perf bench, candidate beside stable -> publish (immutable)
-> an event on the `llm-release://engines/published` asset, which the release_published DAG is
scheduled on. A failed check stops that line before publish; the task log and the report file
say which prompt or metric failed. The candidate is unloaded and removed afterwards either way.

Settings a person does not retype every night (where checkpoints are, the store to publish
to, the test environment) come from the Variable `llm_release_nightly` (docs/builds.md); the
trigger form overrides the build matrix. Paused when first deployed; where the Variable says
`"scheduled": "dry_run"` (the local stack), scheduled runs only report what they would build.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from llm_release_airflow.operators.artifacts import PublishOperator
from llm_release_airflow.operators.nightly import CandidateOperator, EngineBuildOperator
from llm_release_airflow.operators.quality import GoldenPromptOperator, PerfBenchOperator
from llm_release_airflow.retry_policy import fail_now_if_permanent

NIGHTLY_VARIABLE = "llm_release_nightly"
PUBLISHED = Asset(uri="llm-release://engines/published", name="llm_release_published_engines")
PRECISIONS = ["fp32", "fp16", "bf16", "fp8", "int8", "int8_sq", "int4_wo", "int4_awq"]


def _config(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='plan', key='config')['%s'] }}" % key


with DAG(
    dag_id="nightly_build",
    description="Build changed engines, run golden prompts and the perf bench against stable, publish what passes",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=True,  # a schedule that builds and publishes: a person turns it on
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["llm-release", "build"],
    doc_md=__doc__,
    params={
        "models": Param([], type="array", title="Models",
                        description='Model lines to build, e.g. [{"model": "llama3", "checkpoint": "/checkpoints/llama3", '
                                    '"model_family": "llama"}]. Empty: the models in the Variable llm_release_nightly',
                        items={"type": "object"}),
        "precisions": Param(["fp32"], type="array", title="Precisions",
                            description="Build matrix, first axis: one engine per precision (with several variants "
                                        "each is published as <model>_<precision>_tp<N>)",
                            items={"type": "string", "enum": PRECISIONS}, minItems=1),
        "tp_sizes": Param([1], type="array", title="Tensor parallel sizes",
                          description="Build matrix, second axis: GPUs per engine (tp x pp GPUs on one pod)",
                          items={"type": "integer", "minimum": 1, "maximum": 64}, minItems=1),
        "limits": Param({"max_batch_size": 8, "max_input_len": 256, "max_seq_len": 512}, type="object",
                        title="Build limits",
                        description="Shared trtllm-build limits: max_batch_size, max_input_len, max_seq_len "
                                    "(prompt + output), max_num_tokens, kv_cache_type, kv_cache_dtype, pp_size"),
        "builder": Param(None, type=["null", "string"], enum=[None, "reference", "tensorrt_llm", "llm_api"],
                         title="Builder",
                         description="reference (numpy, this worker), tensorrt_llm (GPU pod), llm_api (checkpoint + "
                                     "config, no engine). Empty: the Variable's, else reference"),
        "test_environment": Param(None, type=["null", "string"], title="Test environment",
                                  description="Environment whose Triton serves candidates for the checks. Empty: the "
                                              "Variable's, else staging"),
        "golden_suite": Param(None, type=["null", "string"], title="Golden prompt suite",
                              description="Path of the suite file. Empty: the suite shipped for the model, if any"),
        "perf_concurrencies": Param([1, 2], type="array", title="Perf bench concurrencies",
                                    items={"type": "integer", "minimum": 1, "maximum": 256}, minItems=1,
                                    description="Streaming clients at each level of the bench"),
        "perf_requests_per_level": Param(50, type="integer", minimum=5, maximum=10000,
                                         title="Perf bench requests per level",
                                         description="Requests per version at each concurrency (50 or more for "
                                                     "steady p95 figures)"),
        "perf_gates": Param({}, type="object", title="Perf regression gates",
                            description="Max regression percent per metric, e.g. {\"ttft_p95_ms\": 25, "
                                        "\"output_tokens_per_s\": 15} (percent), null turns one off; empty: the "
                                        "Variable's, else the defaults (docs/quality.md)"),
        "force": Param(False, type="boolean", title="Force",
                       description="Build even when the inputs match the newest published version"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Plan and report what would be built; build nothing"),
    },
) as dag:

    @task(multiple_outputs=False)
    @fail_now_if_permanent
    def plan(params=None, dag_run=None, ti=None) -> list[dict]:
        """Tonight's plan; pushes the run's resolved settings as XCom `config` for the other tasks."""
        import json
        import logging

        from airflow.sdk import Variable

        from llm_release.build.nightly import NightlySpec, plan_builds
        from llm_release.errors import SpecError
        from llm_release_airflow.hooks.artifact_store import store_for_source

        log = logging.getLogger("airflow.task")
        raw = Variable.get(NIGHTLY_VARIABLE, default=None)
        try:
            base = json.loads(raw) if isinstance(raw, str) else (raw or {})
        except ValueError as exc:
            raise SpecError(f"Variable {NIGHTLY_VARIABLE}", f"is not JSON ({exc})", "write a JSON object") from exc
        destination = base.get("destination")
        if not destination:
            raise SpecError(f"Variable {NIGHTLY_VARIABLE}.destination", "is not set",
                            "name the artifact store to publish to (docs/builds.md); the local stack writes one")
        spec = NightlySpec.from_dict({
            "models": params["models"] or base.get("models") or [],
            "precisions": params["precisions"], "tp_sizes": params["tp_sizes"], "limits": params["limits"],
            "builder": params["builder"] or base.get("builder") or "reference",
            "work_dir": base.get("work_dir") or "/tmp/llm-release-builds", "image": base.get("image"),
            "force": params["force"]})
        plans = plan_builds(spec, store_for_source(destination), log=log)
        config = {"destination": destination,
                  "test_environment": params["test_environment"] or base.get("test_environment") or "staging",
                  "golden_suite": params["golden_suite"], "perf_concurrencies": params["perf_concurrencies"],
                  "perf_requests_per_level": params["perf_requests_per_level"],
                  "perf_gates": params["perf_gates"] or base.get("perf_gates") or {}, "report_dir": f"{spec.work_dir}/reports/{dag_run.run_id}",
                  "pod": base.get("pod") or {}, "trtllm": base.get("trtllm") or {}}
        ti.xcom_push(key="config", value=config)
        todo = [p.to_dict() for p in plans if p.action == "build"]
        scheduled_dry = dag_run.run_type == "scheduled" and base.get("scheduled") == "dry_run"
        if params["dry_run"] or scheduled_dry:
            log.info("Dry run%s: would build %s; nothing built", " (scheduled run, Variable says dry_run)"
                     if scheduled_dry else "", ", ".join(f"{p['model']} v{p['version']}" for p in todo) or "nothing")
            return []
        log.info("Building %d of %d engine lines: %s", len(todo), len(plans),
                 ", ".join(f"{p['model']} v{p['version']}" for p in todo) or "none (every line is unchanged)")
        return todo

    plans = plan()
    build = EngineBuildOperator.partial(task_id="build", pod=_config("pod")).expand(plan=plans)
    install = CandidateOperator.partial(task_id="install_candidate", action="install", trtllm=_config("trtllm"),
                                        environment=_config("test_environment")).expand(build=build.output)
    golden = GoldenPromptOperator.partial(task_id="golden_prompts", suite=_config("golden_suite"),
                                          report_dir=_config("report_dir")).expand(candidate=install.output)
    perf = PerfBenchOperator.partial(task_id="perf_bench", concurrencies=_config("perf_concurrencies"),
                                     requests_per_level=_config("perf_requests_per_level"),
                                     gates=_config("perf_gates"), report_dir=_config("report_dir")
                                     ).expand(candidate=golden.output)
    publish = PublishOperator.partial(task_id="publish", destination=_config("destination"), outlets=[PUBLISHED],
                                      retries=3).expand(engine_dir=perf.output.map(lambda c: c["engine_dir"]))
    retire = CandidateOperator.partial(task_id="retire_candidate", action="retire", trigger_rule="all_done",
                                       environment=_config("test_environment")).expand(candidate=install.output)
    perf >> retire
