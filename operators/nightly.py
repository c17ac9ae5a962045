"""Operators of the nightly build: build one planned engine, serve it as a candidate, retire it.

Thin over llm_release.build: the plan (a PlannedBuild as a dict, from the DAG's plan task)
says what to build and how; these operators call the core and log the outcome in a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_release_airflow.retry_policy import ReleaseOperator


class EngineBuildOperator(ReleaseOperator):
    """Build one planned engine with the builder the plan names.

    Local builders (`reference`, `llm_api`) run in the worker. `tensorrt_llm` runs on a GPU pod
    through TRTLLMBuildOperator (KubernetesPodOperator), with `pod` giving its settings
    (namespace, image, checkpoint_pvc, engine_pvc, kubernetes_conn_id, ...); the engine lands
    on the engine volume, which the workers that run the checks mount at the same path.
    Retry-safe: an identical engine already in place is kept, another one is refused.

    :param plan: a PlannedBuild as a dict (model, version, builder, build_params, checkpoint, engine_dir, ...).
    :param pod: TRTLLMBuildOperator arguments for pod builds.
    """

    template_fields: Sequence[str] = ("plan", "pod")
    ui_color = "#9ecae1"

    def __init__(self, *, plan, pod: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.plan = plan
        self.pod = pod or {}

    def execute(self, context) -> dict:
        import time

        from llm_release.build.backends import build_locally, get_builder

        plan = dict(self.plan)
        builder = get_builder(plan["builder"])
        started = time.monotonic()
        if builder.where == "pod":
            return self._build_on_pod(plan, context)
        meta = build_locally(plan["builder"], checkpoint=plan["checkpoint"], engine_dir=plan["engine_dir"],
                             params=plan["build_params"], model=plan["model"], version=int(plan["version"]))
        self.log.info("Built %s v%d (%s, %s) into %s in %.1f s: %d files", meta.model, meta.version, meta.precision,
                      meta.builder, plan["engine_dir"], time.monotonic() - started, len(meta.files))
        return {"model": meta.model, "version": meta.version, "engine_dir": plan["engine_dir"],
                "builder": meta.builder, "precision": meta.precision, "gpu_arch": meta.gpu_arch,
                "checkpoint": plan["checkpoint"]}

    def _build_on_pod(self, plan: dict, context) -> dict:
        from llm_release_airflow.operators.build import TRTLLMBuildOperator

        settings = dict(self.pod)
        if plan.get("image"):
            settings["image"] = plan["image"]  # the image the plan compared with the published inputs
        pod_task = TRTLLMBuildOperator(
            task_id=f"{self.task_id}_pod", model=plan["model"], version=int(plan["version"]),
            model_family=plan.get("model_family"), checkpoint=plan["checkpoint"], build_params=plan["build_params"],
            **settings)
        result = pod_task.execute(context)
        self.log.info("Built %s v%s on a GPU pod into %s", plan["model"], plan["version"],
                      (result or {}).get("engine_dir"))
        return dict(result or {}, builder="tensorrt-llm", checkpoint=plan["checkpoint"])


class CandidateOperator(ReleaseOperator):
    """Serve a built engine as a candidate in the test environment, or retire it again.

    :param action: "install" (install + load beside the serving versions; returns the Candidate)
        or "retire" (unload and remove what install put there).
    :param build: the build's result (engine_dir, ...), for "install".
    :param candidate: install's result, for "retire".
    :param environment: the test environment, "name" or "name/region" (llm_release_environments Variable).
    :param trtllm: for TensorRT-LLM engines in a model-per-release environment: python_models_dir (the
        serving image's pre/post-processing models) and tokenizer_dir (default: the build's checkpoint).
    """

    template_fields: Sequence[str] = ("build", "candidate", "environment", "trtllm")
    ui_color = "#c6dbef"

    def __init__(self, *, action: str, environment: str, build=None, candidate=None, trtllm: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.trtllm = trtllm
        if action not in ("install", "retire"):
            raise ValueError(f"action {action!r} is not install or retire")
        self.action = action
        self.environment = environment
        self.build = build
        self.candidate = candidate

    def execute(self, context):
        from llm_release.build.candidate import Candidate, install_candidate, retire_candidate
        from llm_release_airflow.hooks.environments import load_environments

        name, _, region = str(self.environment).partition("/")  # "staging" or "staging/eu-west"
        env = load_environments().get(name, region or None)
        if self.action == "install":
            settings = self.trtllm or {}
            candidate = install_candidate(env, self.build["engine_dir"],
                                          tokenizer_dir=settings.get("tokenizer_dir") or self.build.get("checkpoint"),
                                          python_models_dir=settings.get("python_models_dir"), log=self.log)
            return {**candidate.to_dict(), "engine_dir": self.build["engine_dir"]}
        if not self.candidate:
            self.log.info("No candidate was installed: nothing to retire")
            return None
        return retire_candidate(env, Candidate.from_dict(self.candidate), log=self.log)


def _trigger_dag_run_operator():
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    return TriggerDagRunOperator


class StartReleaseOperator(ReleaseOperator, _trigger_dag_run_operator()):
    """TriggerDagRunOperator under the project's retry rule: starts a `release` run with `conf`
    (model, version, environment, artifact_digest) and does not wait for it."""

    ui_color = "#c7e9c0"

    def __init__(self, *, trigger_dag_id: str = "release", **kwargs):
        kwargs.setdefault("wait_for_completion", False)
        super().__init__(trigger_dag_id=trigger_dag_id, **kwargs)
