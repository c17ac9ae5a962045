"""The Kubernetes Pod that builds one engine: a plain manifest dict, validated before it exists.

The pod runs `llm-release engine build-trtllm --request <json>` (pod_runner.py) in the build
image (docker/build/Dockerfile). It gets tp*pp GPUs (requests equal limits: GPUs are not
overcommitted), the checkpoint PVC read-only, the engine PVC read-write, a memory-backed
/dev/shm (NCCL uses shared memory between the ranks of a tp>1 build; the container runtime's
64 MiB default is too small), the Hugging Face hub offline, restartPolicy Never (a retry is a
new pod, and the runner makes a retry of a finished build a no-op) and an activeDeadlineSeconds
so a hung build cannot hold GPUs forever.

Every setting is checked with Kubernetes' own rules (DNS-1123 names, label syntax, resource
quantities) and refused with SpecError naming the setting, before any API call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

from llm_release.build.trtllm import TrtllmBuildRequest, check_abs_path, check_image
from llm_release.engine.params import BuildParams
from llm_release.errors import SpecError

GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "build"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")
_SUFFIX = {None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}


def check_dns_label(field_name: str, value: Any) -> str:
    """A DNS-1123 label (namespaces): lower-case alphanumerics and '-', at most 63."""
    if not isinstance(value, str) or len(value) > 63 or not _LABEL.fullmatch(value):
        raise SpecError(field_name, f"{value!r} is not a DNS-1123 label",
                        "use at most 63 lower-case letters, digits and '-', starting and ending "
                        "with a letter or digit")
    return value


def check_dns_subdomain(field_name: str, value: Any) -> str:
    """A DNS-1123 subdomain (pod, PVC, secret, service account names), at most 253."""
    if not isinstance(value, str) or len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise SpecError(field_name, f"{value!r} is not a valid Kubernetes name",
                        "use lower-case letters, digits, '-' and '.', starting and ending with "
                        "a letter or digit, at most 253 characters")
    return value


def check_label_key(field_name: str, key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise SpecError(field_name, f"{key!r} is not a label key", "e.g. example.com/team")
    prefix, _, name = key.rpartition("/")
    if prefix:
        check_dns_subdomain(field_name, prefix)
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise SpecError(field_name, f"{key!r} is not a valid label key",
                        "name part: at most 63 letters, digits, '-', '_' or '.', starting and "
                        "ending with a letter or digit")
    return key


def check_label_value(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 63 or \
            (value and not _LABEL_NAME.fullmatch(value)):
        raise SpecError(field_name, f"{value!r} is not a valid label value",
                        "at most 63 letters, digits, '-', '_' or '.', starting and ending with "
                        "a letter or digit (or empty)")
    return value


def parse_quantity(field_name: str, value: Any) -> Decimal:
    """A Kubernetes resource quantity ("8", "500m", "64Gi") as a number, refused by name."""
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise SpecError(field_name, f"{value!r} is not a Kubernetes quantity",
                        "write it like 8, 500m, 64Gi or 512Mi")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def _check_labels(field_name: str, labels: Any) -> dict[str, str]:
    if not isinstance(labels, Mapping):
        raise SpecError(field_name, "must map label keys to values", "e.g. {team: llm}")
    for key, value in labels.items():
        check_label_key(field_name, key)
        check_label_value(field_name, value)
    return dict(labels)


def _check_tolerations(tolerations: Any) -> list[dict[str, Any]]:
    if not isinstance(tolerations, (list, tuple)):
        raise SpecError("tolerations", "must be a list of tolerations", "e.g. [{key: nvidia.com/gpu, "
                        "operator: Exists, effect: NoSchedule}]")
    checked = []
    for tol in tolerations:
        if not isinstance(tol, Mapping) or set(tol) - _TOLERATION_KEYS:
            raise SpecError("tolerations", f"{tol!r} is not a toleration",
                            f"use only the keys {', '.join(sorted(_TOLERATION_KEYS))}")
        operator = tol.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            raise SpecError("tolerations", f"operator {operator!r} is neither Equal nor Exists",
                            "use Equal or Exists")
        if tol.get("effect") not in (None, "", *_EFFECTS):
            raise SpecError("tolerations", f"effect {tol.get('effect')!r} is unknown",
                            f"use one of {', '.join(sorted(_EFFECTS))}")
        if "key" in tol:
            check_label_key("tolerations", tol["key"])
        if operator == "Exists" and tol.get("value"):
            raise SpecError("tolerations", "operator Exists takes no value", "drop the value")
        checked.append(dict(tol))
    return checked


def _default_tolerations() -> list[dict[str, Any]]:
    return [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class PodSettings:
    """Where and how build pods run; one per cluster/environment, validated on construction.

    `image` is the build image (docker/build/Dockerfile). A tag is accepted, `repo@sha256:<64
    hex>` too and is what production should use (set `require_digest`): a digest cannot move
    under a running release. `:latest` and untagged images are refused as mutable.
    """

    namespace: str
    image: str
    checkpoint_pvc: str
    engine_pvc: str
    checkpoint_mount: str = "/checkpoints"
    engine_mount: str = "/engines"
    node_selector: dict = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: list = field(default_factory=_default_tolerations)
    cpu_request: str = "8"
    cpu_limit: str | None = None
    memory_request: str = "64Gi"
    memory_limit: str | None = "128Gi"
    shm_size: str = "16Gi"
    service_account: str | None = None
    active_deadline_s: int = 4 * 3600
    image_pull_secrets: tuple = ()
    labels: dict = field(default_factory=dict)
    gpus_per_node: int = 8
    require_digest: bool = False

    def __post_init__(self) -> None:
        check_dns_label("namespace", self.namespace)
        check_image("image", self.image)
        digest = "@sha256:" in self.image
        if self.require_digest and not digest:
            raise SpecError("image", f"{self.image} is not pinned by digest",
                            "use repo@sha256:<64 hex> (require_digest is set)")
        last = self.image.split("@")[0].rsplit("/", 1)[-1]
        if not digest and (":" not in last or last.endswith(":latest")):
            raise SpecError("image", f"{self.image} names a mutable tag",
                            "pin a release tag (e.g. llm-release-build:25.10) or a digest")
        check_dns_subdomain("checkpoint_pvc", self.checkpoint_pvc)
        check_dns_subdomain("engine_pvc", self.engine_pvc)
        for name in ("checkpoint_mount", "engine_mount"):
            mount = check_abs_path(name, getattr(self, name))
            if mount == "/dev/shm" or mount.startswith("/dev/shm/"):
                raise SpecError(name, "/dev/shm is the shared-memory volume", "mount elsewhere")
        if self.checkpoint_mount.startswith(self.engine_mount + "/") or \
                self.engine_mount.startswith(self.checkpoint_mount + "/") or \
                self.checkpoint_mount == self.engine_mount:
            raise SpecError("engine_mount", f"{self.engine_mount} and checkpoint_mount "
                            f"{self.checkpoint_mount} overlap", "mount them side by side")
        _check_labels("node_selector", self.node_selector)
        object.__setattr__(self, "tolerations", _check_tolerations(self.tolerations))
        for name in ("cpu_request", "memory_request", "shm_size"):
            parse_quantity(name, getattr(self, name))
        for limit, request in (("cpu_limit", "cpu_request"), ("memory_limit", "memory_request")):
            value = getattr(self, limit)
            if value is not None and parse_quantity(limit, value) < parse_quantity(request, getattr(self, request)):
                raise SpecError(limit, f"{value} is below {request} {getattr(self, request)}",
                                f"set {limit} >= {request}")
        if self.service_account is not None:
            check_dns_subdomain("service_account", self.service_account)
        if isinstance(self.active_deadline_s, bool) or not isinstance(self.active_deadline_s, int) \
                or self.active_deadline_s < 60:
            raise SpecError("active_deadline_s", f"{self.active_deadline_s!r} is not a whole number "
                            "of seconds >= 60", "e.g. 14400 (4 h) for a 70B build")
        if isinstance(self.image_pull_secrets, str) or \
                not isinstance(self.image_pull_secrets, (list, tuple)):
            raise SpecError("image_pull_secrets", "must be a list of secret names", "e.g. [ngc]")
        object.__setattr__(self, "image_pull_secrets", tuple(
            check_dns_subdomain("image_pull_secrets", s) for s in self.image_pull_secrets))
        _check_labels("labels", self.labels)
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) \
                or self.gpus_per_node < 1:
            raise SpecError("gpus_per_node", f"{self.gpus_per_node!r} is not a positive integer",
                            "e.g. 8")


def check_gpu_request(params: BuildParams, gpus_available: int) -> int:
    """GPUs the build needs (tp*pp, one pod on one node); refuse more than a node offers."""
    needed = params.tp_size * params.pp_size
    if needed > gpus_available:
        raise SpecError("tp_size", f"tp_size * pp_size = {params.tp_size} * {params.pp_size} = "
                        f"{needed} GPUs, but a build node offers {gpus_available}",
                        f"keep tp_size * pp_size <= {gpus_available} (gpus_per_node)")
    return needed


def _require_under(field_name: str, path: str, mount: str, mount_field: str) -> None:
    if not path.startswith(mount + "/"):
        raise SpecError(field_name, f"{path} is not under the pod's {mount_field} {mount}",
                        f"give a path inside {mount}")


def build_pod_manifest(request: TrtllmBuildRequest, settings: PodSettings, *,
                       name: str) -> dict[str, Any]:
    """The Pod manifest (apiVersion v1, kind Pod) that builds request's engine."""
    if not isinstance(request, TrtllmBuildRequest):
        raise SpecError("request", f"expected a TrtllmBuildRequest, got {type(request).__name__}",
                        "build it with TrtllmBuildRequest.from_dict")
    if not isinstance(settings, PodSettings):
        raise SpecError("settings", f"expected PodSettings, got {type(settings).__name__}",
                        "build it with PodSettings(...)")
    check_dns_subdomain("name", name)
    gpus = check_gpu_request(request.params, settings.gpus_per_node)
    _require_under("checkpoint_dir", request.checkpoint_dir, settings.checkpoint_mount,
                   "checkpoint_mount")
    _require_under("engine_dir", request.engine_dir, settings.engine_mount, "engine_mount")
    if request.calib_dataset is not None and not (
            request.calib_dataset.startswith(settings.checkpoint_mount + "/")
            or request.calib_dataset.startswith(settings.engine_mount + "/")):
        raise SpecError("calib_dataset", f"{request.calib_dataset} is on neither volume of the "
                        "pod", f"put it under {settings.checkpoint_mount}")

    labels = {"app.kubernetes.io/name": "llm-release-build",
              "app.kubernetes.io/component": "engine-build", **settings.labels}
    try:
        labels["llm-release/model"] = check_label_value("model", request.model)
    except SpecError:
        pass  # names up to 128 characters are valid models but not label values
    labels["llm-release/version"] = str(request.version)

    env = [{"name": k, "value": v} for k, v in (
        ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
        ("PYTHONUNBUFFERED", "1"))]
    if request.image is not None:
        env.append({"name": "LLM_RELEASE_TRITON_IMAGE", "value": request.image})

    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request,
                GPU_RESOURCE: str(gpus)}
    limits = {GPU_RESOURCE: str(gpus)}
    if settings.cpu_limit is not None:
        limits["cpu"] = settings.cpu_limit
    if settings.memory_limit is not None:
        limits["memory"] = settings.memory_limit

    same_pvc = settings.checkpoint_pvc == settings.engine_pvc
    volumes: list[dict[str, Any]] = []
    if same_pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": settings.engine_pvc}})
    else:
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {
            "claimName": settings.checkpoint_pvc, "readOnly": True}})
        volumes.append({"name": "engines", "persistentVolumeClaim": {
            "claimName": settings.engine_pvc}})
    volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}})
    mounts = [
        {"name": "data" if same_pvc else "checkpoints", "mountPath": settings.checkpoint_mount,
         "readOnly": True},
        {"name": "data" if same_pvc else "engines", "mountPath": settings.engine_mount},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]

    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": settings.active_deadline_s,
        "nodeSelector": dict(settings.node_selector),
        "tolerations": [dict(t) for t in settings.tolerations],
        "containers": [{
            "name": CONTAINER_NAME,
            "image": settings.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["llm-release", "engine", "build-trtllm", "--request",
                        json.dumps(request.to_dict(), sort_keys=True, separators=(",", ":"))],
            "env": env,
            "resources": {"requests": requests, "limits": limits},
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    if settings.service_account is not None:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": {"llm-release/model": request.model,
                            "llm-release/version": str(request.version),
                            "llm-release/engine-dir": request.engine_dir},
        },
        "spec": spec,
    }
