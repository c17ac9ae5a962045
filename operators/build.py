"""Build one TensorRT-LLM engine on a GPU pod: KubernetesPodOperator running the core's pod.

Thin: the pod is exactly `llm_release.build.pod.build_pod_manifest` (GPUs = tp*pp, node selector,
tolerations, the checkpoint PVC read-only, the engine PVC, the build command as an argv list
whose last element is the request as JSON); KubernetesPodOperator (cncf-kubernetes 10.25) creates
it, waits for it, streams its log into the task log and deletes it. This module adds what a
release needs around that:

- every argument is checked by the core (BuildParams, TrtllmBuildRequest, PodSettings,
  check_gpu_request) before any API call, and a bad one fails the task at once naming the
  argument (a SpecError is permanent: llm_release_airflow.retry_policy);
- the pod's last log line, `LLM_RELEASE_RESULT {json}` (llm_release.build.pod_runner), becomes the
  task's XCom (model, version, engine_dir, gpu_arch, trtllm_version, ...);
- a failed pod fails the task with what happened to the container ("OOMKilled, exit code 137")
  and the pod's phase, instead of the provider's dump of the whole pod; a pod that never
  started says why (the scheduler's "Insufficient nvidia.com/gpu").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from datetime import timedelta

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.common.compat.sdk import AirflowException, AirflowSkipException

from llm_release_airflow.retry_policy import PermanentTaskError, ReleaseOperator

#: What KubernetesPodOperator would build itself and this operator takes from the core instead.
_NOT_PASSED_THROUGH = ("cmds", "arguments", "full_pod_spec", "pod_template_file", "pod_template_dict", "volumes",
                       "volume_mounts", "container_resources", "env_vars", "env_from", "init_containers")
#: Core setting -> the operator argument a person wrote it as.
_FIELD_NAMES = {"checkpoint_dir": "checkpoint", "params": "build_params", "cpu_request": "resources.requests.cpu",
                "cpu_limit": "resources.limits.cpu", "memory_request": "resources.requests.memory",
                "memory_limit": "resources.limits.memory", "active_deadline_s": "timeout"}
_RESOURCE_FIELDS = {("requests", "cpu"): "cpu_request", ("limits", "cpu"): "cpu_limit",
                    ("requests", "memory"): "memory_request", ("limits", "memory"): "memory_limit"}
#: Container endings that a retry with the same inputs would only repeat.
_PERMANENT_REASONS = {"OOMKilled": "The build ran out of the pod's memory limit: raise resources.limits.memory, "
                                   "or lower max_batch_size / max_num_tokens",
                      "DeadlineExceeded": "The build ran longer than `timeout`: raise it (a 70B build can take "
                                          "hours) or check what the build waited on in its log"}


class BuildPodFailed(AirflowException):
    """The build pod failed or never started; the message says how. Retried (transient) unless
    raised as PermanentTaskError."""


def _as_int(value):
    """Rendered templates arrive as strings unless the DAG renders native objects."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        return int(value)
    return value


class TRTLLMBuildOperator(ReleaseOperator, KubernetesPodOperator):
    """Build `version` of `model` with TensorRT-LLM on one GPU pod; return the build's result.

    :param model: model name (Triton's rules: letters, digits, ``_.-``).
    :param version: release version (positive integer).
    :param model_family: checkpoint converter family (llama, mistral, mixtral, qwen).
    :param checkpoint: the Hugging Face checkpoint, a path on the checkpoint PVC (relative to it, or
        absolute under its mount point, ``/checkpoints`` by default).
    :param build_params: BuildParams as a dict (precision, max_batch_size, max_input_len,
        max_seq_len, tp_size, pp_size, ...).
    :param image: the build image; ``repo@sha256:<digest>`` is what production should use.
    :param namespace: namespace of the build pod.
    :param checkpoint_pvc: PVC holding checkpoints (mounted read-only).
    :param engine_pvc: PVC the engine is written to.
    :param engine_dir: where the engine goes on the engine PVC (relative, or absolute under its
        mount, ``/engines``); default ``<model>/<version>``.
    :param gpus_per_node: GPUs of one build node: tp_size * pp_size above it is refused.
    :param node_selector: node labels of the GPU nodes (default ``nvidia.com/gpu.present=true``).
    :param tolerations: tolerations as dicts (default: tolerate the ``nvidia.com/gpu`` taint).
    :param resources: ``{"requests": {"cpu", "memory"}, "limits": {"cpu", "memory"}}``; the GPUs
        are always tp_size * pp_size (requests = limits), never set here. Kept as
        ``build_resources`` (``BaseOperator.resources`` is Airflow's own, for executors).
    :param timeout: seconds the build may run once started (the pod's activeDeadlineSeconds);
        the task's execution_timeout defaults to it plus the startup timeout.
    :param calib_dataset: local calibration data (fp8, int8_sq, int4_awq or a quantized KV cache).
    :param pod_settings: further ``llm_release.build.pod.PodSettings`` fields (service_account,
        image_pull_secrets, shm_size, checkpoint_mount, engine_mount, require_digest, labels).
    :param kubernetes_conn_id: connection of type ``kubernetes`` (in_cluster, kube_config_path
        or kube_config in its extras).

    KubernetesPodOperator arguments about how the pod is run pass through (startup_timeout_seconds,
    schedule_timeout_seconds, startup_check_interval_seconds, labels, annotations, name,
    on_finish_action, log_events_on_failure, ...); the ones that shape the container (cmds,
    arguments, volumes, env_vars, pod templates, container_resources) are refused: the core owns
    the pod. The pod is deleted when the task ends, succeeded or failed (on_finish_action
    ``delete_pod``); it keeps KubernetesPodOperator's labels (dag_id, task_id, run_id, try_number),
    so a retry finds a pod its predecessor left running and reattaches to it, or cleans it up.

    Not deferrable: the build's result is read from the log this process streams, and the
    retry rule wraps ``execute``. A deferrable mode would need ``trigger_reentry`` to read the
    result line (from the log tail, as ``cleanup`` does here when streaming missed it), to return
    it as the XCom, and the retry rule and failure messages applied there too.
    """

    template_fields: Sequence[str] = (
        "model", "version", "model_family", "checkpoint", "build_params", "image", "namespace", "checkpoint_pvc",
        "engine_pvc", "engine_dir", "gpus_per_node", "node_selector", "tolerations", "build_resources", "timeout",
        "calib_dataset", "pod_settings", "kubernetes_conn_id", "labels", "annotations", "name")
    template_fields_renderers = {"build_params": "json", "build_resources": "json", "tolerations": "json",
                                 "node_selector": "json", "pod_settings": "json"}
    ui_color = "#76b900"

    def __init__(self, *, model: str, version, model_family: str, checkpoint: str, build_params: dict,
                 image: str, namespace: str, checkpoint_pvc: str, engine_pvc: str, engine_dir: str | None = None,
                 gpus_per_node=8, node_selector: dict | None = None, tolerations: list | None = None,
                 resources: dict | None = None, timeout=4 * 3600, calib_dataset: str | None = None,
                 pod_settings: dict | None = None, kubernetes_conn_id: str = "kubernetes_default",
                 startup_timeout_seconds: int = 900, get_logs: bool = True, on_finish_action: str = "delete_pod",
                 log_pod_spec_on_failure: bool = False, deferrable: bool = False, **kwargs):
        refused = sorted(k for k in _NOT_PASSED_THROUGH if k in kwargs)
        if refused:
            raise ValueError(f"TRTLLMBuildOperator builds its pod from the core's manifest; it takes no "
                             f"{', '.join(refused)}")
        if deferrable:
            raise ValueError("TRTLLMBuildOperator is not deferrable (see its docstring for what that would need)")
        if "execution_timeout" not in kwargs and isinstance(timeout, int) and isinstance(startup_timeout_seconds, int):
            kwargs["execution_timeout"] = timedelta(seconds=timeout + startup_timeout_seconds + 300)
        user_formatter = kwargs.pop("log_formatter", None)
        kwargs.setdefault("do_xcom_push", True)
        super().__init__(kubernetes_conn_id=kubernetes_conn_id, namespace=namespace, image=image,
                         startup_timeout_seconds=startup_timeout_seconds, get_logs=get_logs,
                         on_finish_action=on_finish_action, log_pod_spec_on_failure=log_pod_spec_on_failure,
                         deferrable=False, **kwargs)
        self.model = model
        self.version = version
        self.model_family = model_family
        self.checkpoint = checkpoint
        self.build_params = build_params
        self.checkpoint_pvc = checkpoint_pvc
        self.engine_pvc = engine_pvc
        self.engine_dir = engine_dir
        self.gpus_per_node = gpus_per_node
        self.node_selector = node_selector
        self.tolerations = tolerations
        self.build_resources = resources  # BaseOperator.resources is Airflow's executor resources
        self.timeout = timeout
        self.calib_dataset = calib_dataset
        self.pod_settings = pod_settings
        self._user_log_formatter = user_formatter
        self._result: dict | None = None
        self._launch_error: Exception | None = None
        self._request = None

    # -- validation: all of it before any pod exists ----------------------------------------------------------
    def build_request(self):
        """(TrtllmBuildRequest, PodSettings) from the rendered arguments, with the pod manifest
        they make checked too; SpecError names the argument as the DAG wrote it."""
        from llm_release.build.pod import build_pod_manifest, check_label_key, check_label_value

        with _named_as_arguments():
            request, settings = self._build_request()
            for key, value in (self.labels or {}).items():
                check_label_key("labels", key)
                check_label_value("labels", "" if value is None else value)
            build_pod_manifest(request, settings, name=_pod_name(request.model, request.version))
        return request, settings

    def _build_request(self):
        from llm_release.build.pod import PodSettings, check_gpu_request
        from llm_release.build.trtllm import TrtllmBuildRequest
        from llm_release.engine.params import BuildParams
        from llm_release.errors import SpecError

        settings = dict(self.pod_settings or {})
        unknown = sorted(set(settings) & {"namespace", "image", "checkpoint_pvc", "engine_pvc", "node_selector",
                                          "tolerations", "gpus_per_node", "active_deadline_s"})
        if unknown:
            raise SpecError(f"pod_settings.{unknown[0]}", "is an argument of the operator itself",
                            f"pass {unknown[0]}= to TRTLLMBuildOperator")
        settings.update(_resource_settings(self.build_resources))
        if self.node_selector is not None:
            settings["node_selector"] = self.node_selector
        if self.tolerations is not None:
            settings["tolerations"] = self.tolerations
        try:
            pod = PodSettings(namespace=self.namespace, image=self.image, checkpoint_pvc=self.checkpoint_pvc,
                              engine_pvc=self.engine_pvc, gpus_per_node=_as_int(self.gpus_per_node),
                              active_deadline_s=_as_int(self.timeout), **settings)
        except TypeError as exc:  # an unknown PodSettings field in pod_settings
            raise SpecError("pod_settings", str(exc), "see llm_release.build.pod.PodSettings for the fields") from exc
        try:
            params = BuildParams.from_dict(self.build_params if self.build_params is not None else {})
            check_gpu_request(params, pod.gpus_per_node)
        except SpecError as exc:  # named as the DAG wrote it: build_params.<key>
            field = exc.field if exc.field.startswith("build_params") else f"build_params.{exc.field}"
            raise SpecError(field, exc.problem, exc.fix) from exc
        version = _as_int(self.version)
        default_engine = f"{self.model}/{version}" if isinstance(self.model, str) else None
        request = TrtllmBuildRequest(
            model=self.model, version=version, model_family=self.model_family,
            checkpoint_dir=_on_volume("checkpoint", self.checkpoint, pod.checkpoint_mount),
            engine_dir=_on_volume("engine_dir", self.engine_dir or default_engine, pod.engine_mount),
            params=params, calib_dataset=self.calib_dataset, image=self.image)
        return request, pod

    # -- the pod: the core's manifest, with KubernetesPodOperator's labels ---------------------------------------
    def build_pod_request_obj(self, context=None, *, dry_run: bool = False):
        from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import POD_NAME_MAX_LENGTH, add_unique_suffix
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
        from airflow.settings import pod_mutation_hook
        from airflow.version import version as airflow_version

        from llm_release.build.pod import build_pod_manifest

        request, settings = self.build_request()
        self._request = request
        name = self.name or _pod_name(request.model, request.version)
        if self.random_name_suffix:
            name = add_unique_suffix(name=name, max_len=POD_NAME_MAX_LENGTH)
        with _named_as_arguments():
            manifest = build_pod_manifest(request, settings, name=name)
        metadata = manifest["metadata"]
        metadata["labels"] = {**metadata.get("labels", {}), **{k: "" if v is None else v
                                                             for k, v in (self.labels or {}).items()}}
        metadata["annotations"] = {**metadata.get("annotations", {}), **(self.annotations or {})}
        self.base_container_name = manifest["spec"]["containers"][0]["name"]
        self.namespace = settings.namespace
        pod = PodGenerator.deserialize_model_dict(manifest)
        pod.metadata.labels.update(self._get_ti_pod_labels(context))
        pod.metadata.labels["airflow_version"] = airflow_version.replace("+", "-")
        if not dry_run:
            pod.metadata.labels["airflow_kpo_in_cluster"] = str(self.hook.is_in_cluster)
        pod_mutation_hook(pod)
        self.log.info("Build pod %s/%s: %s v%s (%s, tp=%d pp=%d) on %d GPU(s), image %s", settings.namespace, name,
                      request.model, request.version, request.params.precision, request.params.tp_size,
                      request.params.pp_size, request.params.world_size, settings.image)
        return pod

    # -- running it ---------------------------------------------------------------------------------------------
    def execute(self, context) -> dict:
        request, _ = self.build_request()  # refuse bad input before the hook or the API is touched
        self._request = request
        self._result, self._launch_error = None, None
        # bound here, not in __init__: the worker runs a copy of the task (prepare_for_execution)
        self.log_formatter = self._see_log_line
        push = self.do_xcom_push
        self.do_xcom_push = False  # KubernetesPodOperator would read its XCom from a sidecar; ours is the log
        try:
            super().execute(context)
        finally:
            self.do_xcom_push = push
        if self._result is None:
            raise PermanentTaskError(f"the build pod of {request.model} v{request.version} succeeded but printed no "
                                     "LLM_RELEASE_RESULT line: is the image's llm-release the one this Airflow runs?")
        expected = {"model": request.model, "version": request.version, "engine_dir": request.engine_dir}
        differ = {k: self._result.get(k) for k, v in expected.items() if self._result.get(k) != v}
        if differ:
            raise PermanentTaskError(f"the build pod reported {differ}, not {expected}")
        self.log.info("Built %s v%s into %s (%s, TensorRT-LLM %s%s)", request.model, request.version,
                      self._result["engine_dir"], self._result.get("gpu_arch"), self._result.get("trtllm_version"),
                      ", an identical engine was already there" if self._result.get("reused") else "")
        return self._result

    def await_pod_start(self, pod) -> None:
        try:
            super().await_pod_start(pod)
        except Exception as exc:
            self._launch_error = exc
            raise

    def _see_log_line(self, container_name: str, message: str) -> str:
        """KubernetesPodOperator's log_formatter: every streamed line passes here; keep the result."""
        from llm_release.build.pod_runner import parse_result_line

        if container_name == self.base_container_name:
            try:
                result = parse_result_line(message.strip())
            except ValueError:
                result = None
            if result is not None:
                self._result = result
        if self._user_log_formatter:
            return self._user_log_formatter(container_name, message)
        return f"[{container_name}] {message}" if self.container_name_log_prefix_enabled else message

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None) -> None:
        """Read the pod's last state (and, on success, its result if streaming missed it) before
        KubernetesPodOperator deletes it; turn its failure into a sentence about the container."""
        latest = self._read_quietly(remote_pod or pod) if remote_pod is not None else None
        if latest is not None and latest.status and latest.status.phase == "Succeeded" and self._result is None:
            self._result = self._result_from_log_tail(latest)
        try:
            super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)
        except AirflowSkipException:
            raise
        except AirflowException as exc:
            raise self._failure(latest or remote_pod) from exc

    def _read_quietly(self, pod):
        try:
            return self.pod_manager.read_pod(pod)
        except Exception as exc:  # noqa: BLE001 - the pod may be gone; the provider's own state is used then
            self.log.warning("Could not read build pod %s before cleanup: %s", pod.metadata.name, exc)
            return None

    def _result_from_log_tail(self, pod) -> dict | None:
        from llm_release.build.pod_runner import parse_result_line

        try:
            # raw bytes: with _preload_content the client hands back str(bytes), "b'...\\n...'"
            response = self.client.read_namespaced_pod_log(name=pod.metadata.name, namespace=pod.metadata.namespace,
                                                           container=self.base_container_name, tail_lines=20,
                                                           _preload_content=False)
            text = response.data.decode("utf-8", errors="replace")
        except Exception as exc:  # noqa: BLE001
            self.log.warning("Could not read the log tail of %s: %s", pod.metadata.name, exc)
            return None
        results = [r for r in (_parse_or_none(parse_result_line, line) for line in text.splitlines()) if r]
        return results[-1] if results else None

    def _failure(self, pod) -> AirflowException:
        """What happened, in one sentence: the container's ending, or why it never started."""
        what = (f"TensorRT-LLM build of {self._request.model} v{self._request.version}" if self._request
                else "TensorRT-LLM build")
        name = f"{pod.metadata.namespace}/{pod.metadata.name}" if pod is not None else "(no pod)"
        status = pod.status if pod is not None else None
        phase = status.phase if status else "unknown"
        container = next((c for c in (status.container_statuses or []) if c.name == self.base_container_name),
                         None) if status else None
        terminated = container.state.terminated if container and container.state else None
        waiting = container.state.waiting if container and container.state else None
        pod_reason = status.reason if status else None
        if terminated is not None:
            ending = f"{terminated.reason or 'terminated'}, exit code {terminated.exit_code}"
            detail = f" (pod phase {phase}{', ' + pod_reason if pod_reason else ''})"
            if terminated.message:
                detail += f"; termination message: {terminated.message.strip()[-2000:]}"
            hint = _PERMANENT_REASONS.get(pod_reason) or _PERMANENT_REASONS.get(terminated.reason)
            message = f"{what} failed in pod {name}: {ending}{detail}"
            if hint:
                return PermanentTaskError(f"{message}. {hint} (permanent: not retried)")
            return BuildPodFailed(message)
        unscheduled = next((c for c in (status.conditions or []) if c.type == "PodScheduled" and c.status == "False"),
                           None) if status else None
        if self._launch_error is not None:
            why = (f"{unscheduled.reason}: {unscheduled.message}" if unscheduled is not None else
                   f"{waiting.reason}: {waiting.message or ''}".rstrip(": ") if waiting is not None else
                   str(self._launch_error).splitlines()[0])
            limit = self.schedule_timeout_seconds if unscheduled is not None else self.startup_timeout_seconds
            return BuildPodFailed(f"{what}: pod {name} did not start within {limit} s (phase {phase}): {why}")
        return BuildPodFailed(f"{what} failed in pod {name} (phase {phase}{', ' + pod_reason if pod_reason else ''})")


@contextlib.contextmanager
def _named_as_arguments():
    """Re-raise the core's SpecError under the operator argument's name (checkpoint_dir -> checkpoint)."""
    from llm_release.errors import SpecError

    try:
        yield
    except SpecError as exc:
        field = _FIELD_NAMES.get(exc.field, exc.field)
        if field == exc.field:
            raise
        raise SpecError(field, exc.problem, exc.fix) from exc


def _parse_or_none(parse, line: str):
    try:
        return parse(line.strip())
    except ValueError:
        return None


def _pod_name(model: str, version: int) -> str:
    """`trtllm-build-<model>-v<version>`, made a DNS label (kubectl get pods shows what builds)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")[:30].strip("-") or "model"
    return f"trtllm-build-{slug}-v{version}"


def _on_volume(field: str, path, mount: str):
    """A path on a PVC as the pod sees it: relative paths are taken from the mount point."""
    from llm_release.errors import SpecError

    if not isinstance(path, str) or not path:
        raise SpecError(field, f"{path!r} is not a path", f"give a path on the volume mounted at {mount}")
    return path if path.startswith("/") else f"{mount}/{path}"


def _resource_settings(resources) -> dict:
    """`resources` in Kubernetes' form, as PodSettings fields; GPUs are never set here."""
    from llm_release.errors import SpecError

    if resources is None:
        return {}
    if not isinstance(resources, dict) or set(resources) - {"requests", "limits"}:
        raise SpecError("resources", f"{resources!r} is not {{requests: ..., limits: ...}}",
                        "e.g. {limits: {memory: 256Gi}}")
    out = {}
    for kind, values in resources.items():
        for key, value in (values or {}).items():
            if key == "nvidia.com/gpu":
                raise SpecError(f"resources.{kind}.nvidia.com/gpu", "GPUs are tp_size * pp_size of build_params",
                                "remove it; set build_params.tp_size / pp_size")
            setting = _RESOURCE_FIELDS.get((kind, key))
            if setting is None:
                raise SpecError(f"resources.{kind}.{key}", "is not a resource the build pod sets",
                                "use cpu and memory (GPUs come from tp_size * pp_size)")
            # `cpu: 16` is a valid quantity in YAML, and native template rendering turns "16" into 16
            out[setting] = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    return out
