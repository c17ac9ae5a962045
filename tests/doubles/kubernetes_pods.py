"""A Kubernetes API server test double for core/v1 pods (and their logs and events), over HTTP
on 127.0.0.1, good enough to drive a real KubernetesPodOperator run end to end.

No cluster, scheduler or kubelet can run on a test machine, so each pod's life is a script the
test chooses when the pod is created (`on_create(lambda manifest: PodScript(...))`): how long it
stays Pending (ContainerCreating), how long its container runs, what it prints, how it ends
(exit 0 "Completed", "Error", "OOMKilled" 137), or that it never gets a node (Unschedulable).
The state is computed from the clock on every read, as a real pod moves on between two reads.

The REST calls are those the official `kubernetes` client sends (and that the cncf-kubernetes
provider 10.25 makes), answered as the API server does (pkg/registry/core/pod, apimachinery):

- `POST /api/v1/namespaces/{ns}/pods`: 201 with the server's defaults and metadata (uid,
  resourceVersion, creationTimestamp), status Pending; 409 AlreadyExists on a taken name; 400
  when the body's namespace is not the URL's; 422 Invalid (one cause per field) for what pod
  validation refuses and llm-release could get wrong: the name (RFC 1123 subdomain), label keys
  and values, containers without name or image, volume mounts of undeclared volumes, extended
  resources (nvidia.com/gpu) that are not whole numbers or whose request differs from the limit,
  tolerations, restartPolicy and activeDeadlineSeconds.
- `GET .../pods/{name}`, `GET .../pods` with `labelSelector` (=, ==, !=, exists, !exists, in,
  notin) and `fieldSelector` (metadata.name, status.phase, spec.nodeName, ...); an unknown field
  is 400 as on the server.
- `PATCH .../pods/{name}`: strategic-merge (what the client sends for a dict) and merge patches
  of metadata (labels, annotations); a patch that changes the spec is 422 Forbidden (pod specs
  are immutable), status is ignored (a subresource).
- `DELETE .../pods/{name}` (grace period from the query or the DeleteOptions body): 200 with the
  pod carrying deletionTimestamp. A pod that never started, or has finished, disappears at
  once; a running one has its container stopped (exit 143) and disappears after the grace
  period, capped by the script's `terminating_s`.
- `GET .../pods/{name}/log` with `container`, `follow`, `timestamps` (RFC 3339 with nanoseconds,
  as the kubelet writes), `sinceSeconds`, `tailLines`: text/plain; with follow the response is
  chunked and streams each line when the container prints it, and ends when the container
  terminates (or the pod is deleted). 400 for a pod without a node ("does not have a host
  assigned"), a container still waiting, a missing or unknown container name.
- `GET /api/v1/namespaces/{ns}/events?fieldSelector=involvedObject.name=...` (plus
  `resourceVersion` / `resourceVersionMatch`): the pod's events, Scheduled/FailedScheduling,
  Pulling/Pulled/Created/Started, Killing, DeadlineExceeded, with stable uids.
- `spec.activeDeadlineSeconds` is enforced: the pod fails with reason DeadlineExceeded.
- Errors are `Status` objects; a request without `Authorization: Bearer <token>` is 401.

Not modelled: watches (answered 400), status transitions bumping resourceVersion, restarts
(restartPolicy is always treated as Never), init containers, exec/attach.

For tests: `created` holds every pod body as sent, `requests` every call, `pod(name)` reads a pod
as the server would serve it, `exists(name)`, `deleted` the names deleted, `count()`.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from tests.doubles._http import DoubleHandler, ThreadedDouble
from tests.doubles.kubernetes import _merge_patch, _StatusError

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class PodScript:
    """How one pod lives, in seconds from its creation.

    `pending_s`: scheduled, container waiting (ContainerCreating) before it starts.
    `running_s`: how long the container runs; `logs` are printed evenly over that time, the
    last line just before it ends. `exit_code`/`reason`: how it ends (reason defaults to
    "Completed" for 0 and "Error" otherwise; "OOMKilled" with 137 for the kernel's OOM killer).
    `message`: the container's termination message. `unschedulable`: the scheduler's message;
    the pod then stays Pending with PodScheduled=False, reason Unschedulable, forever.
    `waiting`: (reason, message) the container stays waiting with, e.g. ("ErrImagePull", ...).
    `terminating_s`: the most a deleted running pod lingers (Terminating) before it is gone.
    """

    pending_s: float = 0.2
    running_s: float = 0.5
    logs: tuple[str, ...] = ()
    exit_code: int = 0
    reason: str | None = None
    message: str | None = None
    unschedulable: str | None = None
    waiting: tuple[str, str] | None = None
    node: str = "gpu-node-1"
    terminating_s: float = 0.0

    @property
    def end_reason(self) -> str:
        return self.reason or ("Completed" if self.exit_code == 0 else "Error")

    @classmethod
    def oom_killed(cls, logs=(), **kwargs) -> PodScript:
        return cls(logs=tuple(logs), exit_code=137, reason="OOMKilled", **kwargs)

    @classmethod
    def unschedulable_gpus(cls, nodes: int = 4) -> PodScript:
        """The scheduler's message when no node has enough free GPUs."""
        return cls(unschedulable=f"0/{nodes} nodes are available: {nodes} Insufficient {GPU_RESOURCE}. "
                                 f"preemption: 0/{nodes} nodes are available: {nodes} No preemption victims "
                                 "found for incoming pod.")


@dataclass
class _Pod:
    obj: dict  # metadata + spec as stored (status is computed)
    script: PodScript
    created: float  # monotonic
    created_wall: datetime
    deleted: float | None = None  # monotonic time of the DELETE
    gone: float | None = None  # monotonic time it disappears from the store

    # -- the timeline --------------------------------------------------------------------------
    @property
    def start(self) -> float:
        return self.created + self.script.pending_s

    def deadline(self) -> float | None:
        seconds = self.obj["spec"].get("activeDeadlineSeconds")
        return self.created + seconds if seconds else None

    def end(self) -> tuple[float | None, int, str, str | None]:
        """(when the container ends, exit code, reason, pod-level reason); time None: never."""
        ends = []
        if not self.script.unschedulable and not self.script.waiting:
            ends.append((self.start + self.script.running_s, self.script.exit_code, self.script.end_reason, None))
        deadline = self.deadline()
        if deadline is not None and not self.script.unschedulable:
            ends.append((deadline, 137, "Error", "DeadlineExceeded"))
        if self.deleted is not None:
            ends.append((self.deleted, 143, "Error", None))
        if not ends:
            return None, 0, "", None
        return min(ends, key=lambda e: e[0])

    def wall(self, t: float) -> datetime:
        return self.created_wall + timedelta(seconds=t - self.created)

    def log_lines(self, now: float) -> list[tuple[datetime, str]]:
        """The lines printed up to `now`, with the kubelet's timestamps."""
        lines = self.script.logs
        if self.script.unschedulable or self.script.waiting or not lines:
            return []
        ended, *_ = self.end()
        limit = min(now, ended) if ended is not None else now
        out = []
        for i, line in enumerate(lines):
            at = self.start + self.script.running_s * (i + 0.5) / len(lines)
            if at <= limit and at >= self.start:
                out.append((self.wall(at), line))
        return out

    def next_line_at(self, printed: int) -> float | None:
        lines = self.script.logs
        if printed >= len(lines):
            return None
        return self.start + self.script.running_s * (printed + 0.5) / len(lines)


def _ts(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts_nano(moment: datetime) -> str:
    """RFC 3339 with nanoseconds, as the kubelet prefixes log lines with timestamps=true."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


# -- validation (the parts of pkg/apis/core/validation llm-release could get wrong) ---------------
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def _label_errors(labels, path: str) -> list[tuple[str, str]]:
    errors = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not _DNS1123_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(name) or len(name) > 63:
            errors.append((path, f"Invalid value: {json.dumps(key)}: name part must consist of alphanumeric "
                                 "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
        if not isinstance(value, str):
            errors.append((f"{path}.{key}", f"Invalid value: {json.dumps(value)}: must be a string"))
        elif len(value) > 63:
            errors.append((path, f"Invalid value: {json.dumps(value)}: must be no more than 63 characters"))
        elif not _LABEL_VALUE.match(value):
            errors.append((path, f"Invalid value: {json.dumps(value)}: {_LABEL_VALUE_MSG}"))
    return errors


def _pod_errors(pod: dict) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    meta, spec = pod.get("metadata") or {}, pod.get("spec")
    name = meta.get("name", "")
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errors.append(("metadata.name", f"Invalid value: {json.dumps(name)}: {_SUBDOMAIN_MSG}"))
    errors += _label_errors(meta.get("labels"), "metadata.labels")
    if not isinstance(spec, dict):
        return errors + [("spec", "Required value")]
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    for i, volume in enumerate(spec.get("volumes") or []):
        if not _DNS1123_LABEL.match(volume.get("name") or ""):
            errors.append((f"spec.volumes[{i}].name", f"Invalid value: {json.dumps(volume.get('name'))}: "
                                                      "a lowercase RFC 1123 label must consist of lower case "
                                                      "alphanumeric characters or '-'"))
        claim = volume.get("persistentVolumeClaim")
        if claim is not None and not claim.get("claimName"):
            errors.append((f"spec.volumes[{i}].persistentVolumeClaim.claimName", "Required value"))
    if len(volumes) != len(set(volumes)):
        errors.append(("spec.volumes", "Duplicate value: volume names must be unique"))
    containers = spec.get("containers") or []
    if not containers:
        errors.append(("spec.containers", "Required value"))
    for i, container in enumerate(containers):
        path = f"spec.containers[{i}]"
        if not _DNS1123_LABEL.match(container.get("name") or ""):
            errors.append((f"{path}.name", "Required value" if not container.get("name") else
                           f"Invalid value: {json.dumps(container['name'])}: a lowercase RFC 1123 label"))
        if not container.get("image"):
            errors.append((f"{path}.image", "Required value"))
        for key in ("command", "args"):
            if container.get(key) is not None and not all(isinstance(a, str) for a in container[key]):
                errors.append((f"{path}.{key}", "Invalid value: must be a list of strings"))
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                errors.append((f"{path}.volumeMounts[{j}].name", f"Not found: {json.dumps(mount.get('name'))}"))
            if not str(mount.get("mountPath") or "").startswith("/"):
                errors.append((f"{path}.volumeMounts[{j}].mountPath", "Required value"))
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for kind, values in (("limits", limits), ("requests", requests)):
            value = values.get(GPU_RESOURCE)
            if value is not None and not re.fullmatch(r"[0-9]+", str(value)):
                errors.append((f"{path}.resources.{kind}[{GPU_RESOURCE}]",
                               f"Invalid value: {json.dumps(value)}: must be an integer"))
        if GPU_RESOURCE in requests and str(requests[GPU_RESOURCE]) != str(limits.get(GPU_RESOURCE)):
            errors.append((f"{path}.resources.requests[{GPU_RESOURCE}]",
                           f"Invalid value: {json.dumps(requests[GPU_RESOURCE])}: must be equal to "
                           f"{GPU_RESOURCE} limit of {limits.get(GPU_RESOURCE, 0)}"))
    if spec.get("restartPolicy", "Always") not in ("Always", "OnFailure", "Never"):
        errors.append(("spec.restartPolicy", f"Unsupported value: {json.dumps(spec['restartPolicy'])}: "
                                             "supported values: \"Always\", \"OnFailure\", \"Never\""))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and not (isinstance(deadline, int) and 1 <= deadline <= 2**31 - 1):
        errors.append(("spec.activeDeadlineSeconds", f"Invalid value: {json.dumps(deadline)}: must be between 1 "
                                                     "and 2147483647, inclusive"))
    for i, toleration in enumerate(spec.get("tolerations") or []):
        operator = toleration.get("operator", "Equal")
        if operator not in ("Equal", "Exists"):
            errors.append((f"spec.tolerations[{i}].operator", f"Unsupported value: {json.dumps(operator)}"))
        if operator == "Exists" and toleration.get("value"):
            errors.append((f"spec.tolerations[{i}].operator", "Invalid value: \"Exists\": value must be empty "
                                                              "when `operator` is 'Exists'"))
        if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            errors.append((f"spec.tolerations[{i}].effect", f"Unsupported value: {json.dumps(toleration['effect'])}"))
    selector = spec.get("nodeSelector") or {}
    errors += _label_errors(selector, "spec.nodeSelector")
    return errors


def _defaulted(pod: dict) -> dict:
    """The API server's defaults for the fields a Pod body leaves out."""
    spec = pod["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    for container in spec["containers"]:
        image = container["image"]
        tagged = "@" in image or ":" in image.rsplit("/", 1)[-1]
        latest = image.endswith(":latest") or not tagged
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        resources = container["resources"]
        if resources.get("limits") and not resources.get("requests"):
            resources["requests"] = dict(resources["limits"])  # requests default to limits
    return pod


# -- selectors ------------------------------------------------------------------------------------------
_POD_FIELDS = {"metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
               "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
               "status.nominatedNodeName"}
_EVENT_FIELDS = {"metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
                 "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
                 "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent",
                 "source", "type"}


def _split_requirements(selector: str) -> list[str]:
    """Split on the commas that are not inside `in (...)` sets."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def label_selector(selector: str) -> Callable[[dict], bool]:
    """A predicate over a labels dict for a Kubernetes label selector; ValueError if malformed."""
    tests = []
    for requirement in _split_requirements(selector or ""):
        found = re.fullmatch(r"\s*(\S+?)\s+(in|notin)\s+\(([^)]*)\)\s*", requirement)
        if found:
            key, op, values = found[1], found[2], {v.strip() for v in found[3].split(",") if v.strip()}
            tests.append((lambda k, vs: lambda ls: ls.get(k) in vs)(key, values) if op == "in"
                         else (lambda k, vs: lambda ls: ls.get(k) not in vs)(key, values))
            continue
        found = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)\s*", requirement)
        if found:
            key, op, value = found[1], found[2], found[3]
            tests.append((lambda k, v: lambda ls: ls.get(k) != v)(key, value) if op == "!="
                         else (lambda k, v: lambda ls: ls.get(k) == v)(key, value))
            continue
        found = re.fullmatch(r"\s*(!?)([A-Za-z0-9][-A-Za-z0-9_./]*)\s*", requirement)
        if not found:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        negate, key = found[1] == "!", found[2]
        tests.append((lambda k, n: lambda ls: (k in ls) != n)(key, negate))
    return lambda labels: all(test(labels or {}) for test in tests)


def field_selector(selector: str, known: set[str]) -> Callable[[dict], bool]:
    tests = []
    for requirement in _split_requirements(selector or ""):
        found = re.fullmatch(r"([^=!]+)(==|=|!=)(.*)", requirement)
        if not found:
            raise ValueError(f"invalid selector: '{selector}'; can't understand '{requirement}'")
        path, op, value = found[1].strip(), found[2], found[3].strip()
        if path not in known:
            raise KeyError(path)

        def read(obj, path=path):
            for part in path.split("."):
                obj = obj.get(part) if isinstance(obj, dict) else None
            if isinstance(obj, dict) and path == "source":
                obj = obj.get("component")
            return "" if obj is None else str(obj).lower() if isinstance(obj, bool) else str(obj)

        tests.append((lambda r, v, neg: lambda o: (r(o) == v) != neg)(read, value, op == "!="))
    return lambda obj: all(test(obj) for test in tests)


# -- the double --------------------------------------------------------------------------------------------
class KubernetesPodsDouble(ThreadedDouble):
    """Serves core/v1 pods, their logs and events at `url`; requests need `Bearer <token>`."""

    thread_name = "kubernetes-pods-double"

    def __init__(self, *, token: str = "test-token"):
        self.token = token
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query) in arrival order
        self.created: list[dict] = []  # every accepted pod body, exactly as sent
        self.deleted: list[str] = []  # names, in order
        self._script: Callable[[dict], PodScript] = lambda manifest: PodScript()
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._history: list[_Pod] = []  # every pod ever created: events outlive pods
        self._forbidden: set[str] = set()
        self._revision = 5000
        self._lock = threading.Lock()
        self._closing = threading.Event()

    @property
    def handler(self):
        return _Handler

    def kubeconfig(self, namespace: str = "default", token: str | None = None) -> dict:
        """A kubeconfig (as a dict) that points the official client at this double."""
        return {"apiVersion": "v1", "kind": "Config", "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": self.url}}],
                "users": [{"name": "u", "user": {"token": token or self.token}}],
                "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u",
                                                            "namespace": namespace}}]}

    def stop(self) -> None:
        self._closing.set()
        super().stop()

    # -- test controls ----------------------------------------------------------------------------------------
    def on_create(self, script: Callable[[dict], PodScript]) -> None:
        """`script(manifest)` decides the life of each pod created from now on."""
        self._script = script

    def forbid(self, verb: str) -> None:
        """RBAC denies `verb` (create, get, list, patch, delete) on pods: 403 Forbidden."""
        self._forbidden.add(verb)

    def count(self, method: str | None = None, what: str = "pods") -> int:
        """Requests by method on pods ("pods"), logs ("log") or events ("events")."""
        with self._lock:
            return sum(1 for m, path, _ in self.requests
                       if (method is None or m == method.upper()) and _kind(path) == what)

    def exists(self, name: str, namespace: str | None = None) -> bool:
        with self._lock:
            self._collect(time.monotonic())
            return any(n == name and (namespace is None or ns == namespace) for ns, n in self._pods)

    def pod(self, name: str, namespace: str = "default") -> dict:
        """The pod as a GET would answer now (KeyError if there is none)."""
        with self._lock:
            now = time.monotonic()
            self._collect(now)
            return self._served(self._pods[(namespace, name)], now)

    # -- the API ------------------------------------------------------------------------------------------
    def create(self, namespace: str, body) -> dict:
        if not isinstance(body, dict) or body.get("kind", "Pod") != "Pod" or body.get("apiVersion", "v1") != "v1":
            raise _StatusError(400, "BadRequest", "the body of the request was not a v1 Pod")
        sent = copy.deepcopy(body)
        pod = copy.deepcopy(body)
        meta = pod.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise _StatusError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                                  "sent on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        if not name:
            raise _invalid("", [("metadata.name", "Required value: name or generateName is required")])
        errors = _pod_errors(pod)
        with self._lock:
            now = time.monotonic()
            self._collect(now)
            if (namespace, name) in self._pods:
                raise _StatusError(409, "AlreadyExists", f"pods \"{name}\" already exists",
                                   {"name": name, "kind": "pods"})
            if errors:
                raise _invalid(name, errors)
            pod.pop("status", None)
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_ts(datetime.now(timezone.utc)),
                        resourceVersion=self._next_revision())
            meta.setdefault("labels", {})
            record = _Pod(_defaulted(pod), self._script(copy.deepcopy(sent)), now, datetime.now(timezone.utc))
            self._pods[(namespace, name)] = record
            self._history.append(record)
            self.created.append(sent)
            return self._served(record, now)

    def get(self, namespace: str, name: str) -> dict:
        with self._lock:
            now = time.monotonic()
            return self._served(self._existing(namespace, name, now), now)

    def list(self, namespace: str | None, labels: str, fields: str) -> dict:
        try:
            by_labels = label_selector(labels)
            by_fields = field_selector(fields, _POD_FIELDS)
        except KeyError as exc:
            raise _StatusError(400, "BadRequest", f"\"{exc.args[0]}\" is not a known field selector: only "
                                                  "\"metadata.name\", \"metadata.namespace\"") from exc
        except ValueError as exc:
            raise _StatusError(400, "BadRequest", str(exc)) from exc
        with self._lock:
            now = time.monotonic()
            self._collect(now)
            items = [self._served(p, now) for (ns, _), p in sorted(self._pods.items())
                     if namespace in (None, ns)]
            items = [i for i in items if by_labels(i["metadata"].get("labels")) and by_fields(i)]
            return {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": str(self._revision)},
                    "items": items}

    def patch(self, namespace: str, name: str, patch, content_type: str) -> dict:
        if content_type not in ("application/strategic-merge-patch+json", "application/merge-patch+json"):
            raise _StatusError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types include: "
                               f"application/merge-patch+json, application/strategic-merge-patch+json (this "
                               f"double does not serve {content_type})")
        if not isinstance(patch, dict):
            raise _StatusError(400, "BadRequest", "a merge patch must be a JSON object")
        with self._lock:
            now = time.monotonic()
            record = self._existing(namespace, name, now)
            patched = _merge_patch(record.obj, {k: v for k, v in patch.items() if k != "status"})
            if patched.get("spec") != record.obj["spec"]:
                raise _invalid(name, [("spec", "Forbidden: pod updates may not change fields other than "
                                               "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                                               "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                                               "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                                               "(allow it to be set to 1 if it was previously negative)")])
            for key in ("uid", "name", "namespace", "creationTimestamp"):
                if patched["metadata"].get(key) != record.obj["metadata"].get(key):
                    raise _invalid(name, [(f"metadata.{key}", "Invalid value: field is immutable")])
            errors = _label_errors(patched["metadata"].get("labels"), "metadata.labels")
            if errors:
                raise _invalid(name, errors)
            patched["metadata"]["resourceVersion"] = self._next_revision()
            record.obj = patched
            return self._served(record, now)

    def delete(self, namespace: str, name: str, grace: int | None) -> dict:
        with self._lock:
            now = time.monotonic()
            record = self._existing(namespace, name, now)
            if record.deleted is None:
                grace = record.obj["spec"]["terminationGracePeriodSeconds"] if grace is None else grace
                served = self._served(record, now)
                phase = served["status"]["phase"]
                running = phase == "Running"
                record.deleted = now
                record.gone = now + (min(grace, record.script.terminating_s) if running else 0.0)
                record.obj["metadata"].update(deletionTimestamp=_ts(datetime.now(timezone.utc) +
                                                                    timedelta(seconds=grace)),
                                              deletionGracePeriodSeconds=grace,
                                              resourceVersion=self._next_revision())
                self.deleted.append(name)
            served = self._served(record, now)
            self._collect(now)
            return served

    def events(self, namespace: str, fields: str, resource_version: str | None, match: str | None) -> dict:
        if match and not resource_version:
            raise _StatusError(422, "Invalid", "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: "
                                               "Forbidden: resourceVersionMatch is forbidden unless resourceVersion "
                                               "is provided")
        if match not in (None, "", "NotOlderThan", "Exact"):
            raise _StatusError(422, "Invalid", f"resourceVersionMatch: Unsupported value: {json.dumps(match)}")
        try:
            by_fields = field_selector(fields, _EVENT_FIELDS)
        except KeyError as exc:
            raise _StatusError(400, "BadRequest", f"\"{exc.args[0]}\" is not a known field selector") from exc
        except ValueError as exc:
            raise _StatusError(400, "BadRequest", str(exc)) from exc
        with self._lock:
            now = time.monotonic()
            items = [e for p in self._history if p.obj["metadata"]["namespace"] == namespace
                     for e in self._events(p, now)]
            items = [e for e in items if by_fields(e)]
            return {"apiVersion": "v1", "kind": "EventList", "metadata": {"resourceVersion": str(self._revision)},
                    "items": items}

    def log_lines(self, namespace: str, name: str, container: str | None, previous: bool) -> tuple[_Pod, str]:
        """Check a log request as the API server and kubelet do; return the pod and container."""
        with self._lock:
            now = time.monotonic()
            record = self._existing(namespace, name, now)
            served = self._served(record, now)
        names = [c["name"] for c in record.obj["spec"]["containers"]]
        if container is None:
            if len(names) > 1:
                raise _StatusError(400, "BadRequest", f"a container name must be specified for pod {name}, choose "
                                                      f"one of: [{' '.join(names)}]")
            container = names[0]
        if container not in names:
            raise _StatusError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if previous:
            raise _StatusError(400, "BadRequest", f"previous terminated container \"{container}\" in pod \"{name}\" "
                                                  "not found")
        if not served["spec"].get("nodeName"):
            raise _StatusError(400, "BadRequest", f"pod {name} does not have a host assigned")
        state = served["status"]["containerStatuses"][0]["state"]
        if "waiting" in state:
            raise _StatusError(400, "BadRequest", f"container \"{container}\" in pod \"{name}\" is waiting to start: "
                                                  f"{state['waiting']['reason']}")
        return record, container

    # -- internals (callers hold the lock) ---------------------------------------------------------------------
    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    def _collect(self, now: float) -> None:
        """Pods whose deletion has completed leave the store."""
        for key in [k for k, p in self._pods.items() if p.gone is not None and p.gone <= now]:
            del self._pods[key]

    def _existing(self, namespace: str, name: str, now: float) -> _Pod:
        self._collect(now)
        record = self._pods.get((namespace, name))
        if record is None:
            raise _StatusError(404, "NotFound", f"pods \"{name}\" not found", {"name": name, "kind": "pods"})
        return record

    def _served(self, record: _Pod, now: float) -> dict:
        obj = copy.deepcopy(record.obj)
        script, spec = record.script, obj["spec"]
        container = spec["containers"][0]
        if not script.unschedulable:
            spec["nodeName"] = script.node
        status: dict = {"phase": "Pending", "qosClass": _qos(spec)}
        since = _ts(record.created_wall)
        if script.unschedulable:
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": script.unschedulable, "lastProbeTime": None,
                                     "lastTransitionTime": since}]
            obj["status"] = status
            return obj
        ended, exit_code, reason, pod_reason = record.end()
        finished = ended is not None and ended <= now
        started = now >= record.start and not script.waiting and not (finished and ended < record.start)
        status.update(hostIP="10.0.0.7", startTime=since)
        cs = {"name": container["name"], "image": container["image"], "imageID": "", "restartCount": 0,
              "ready": False, "started": False, "lastState": {}}
        if finished:
            terminated = {"exitCode": exit_code, "reason": reason,
                          "startedAt": _ts(record.wall(record.start)) if started else None,
                          "finishedAt": _ts(record.wall(ended)),
                          "containerID": f"containerd://{record.obj['metadata']['uid'].replace('-', '')}"}
            if script.message and ended == record.start + script.running_s:
                terminated["message"] = script.message
            cs["state"] = {"terminated": terminated}
            status["phase"] = "Succeeded" if exit_code == 0 and pod_reason is None else "Failed"
            if pod_reason == "DeadlineExceeded":
                status.update(reason="DeadlineExceeded",
                              message="Pod was active on the node longer than the specified deadline")
        elif started:
            cs.update(ready=True, started=True, state={"running": {"startedAt": _ts(record.wall(record.start))}},
                      containerID=f"containerd://{record.obj['metadata']['uid'].replace('-', '')}")
            status.update(phase="Running", podIP="10.244.1.23")
        else:
            waiting_reason, waiting_message = script.waiting or ("ContainerCreating", None)
            cs["state"] = {"waiting": {"reason": waiting_reason, **({"message": waiting_message}
                                                                    if waiting_message else {})}}
        ready = "True" if cs["ready"] else "False"
        not_ready = {} if cs["ready"] else {
            "reason": "PodCompleted" if status["phase"] == "Succeeded" else "ContainersNotReady",
            **({} if status["phase"] == "Succeeded" else
               {"message": f"containers with unready status: [{container['name']}]"})}
        status["conditions"] = [
            {"type": "PodReadyToStartContainers", "status": "True" if started or finished else "False",
             "lastProbeTime": None, "lastTransitionTime": since},
            {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": since},
            {"type": "Ready", "status": ready, **not_ready, "lastProbeTime": None, "lastTransitionTime": since},
            {"type": "ContainersReady", "status": ready, **not_ready, "lastProbeTime": None,
             "lastTransitionTime": since},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": since},
        ]
        status["containerStatuses"] = [cs]
        obj["status"] = status
        return obj

    def _events(self, record: _Pod, now: float) -> list[dict]:
        """The pod's events that have happened by `now` (they outlive the pod)."""
        meta, script = record.obj["metadata"], record.script
        container = record.obj["spec"]["containers"][0]
        name, ns = meta["name"], meta["namespace"]
        happened: list[tuple[float, str, str, str, str, str | None]] = []  # (t, type, reason, message, source, path)
        path = f"spec.containers{{{container['name']}}}"
        if script.unschedulable:
            happened.append((record.created, "Warning", "FailedScheduling", script.unschedulable,
                             "default-scheduler", None))
        else:
            happened.append((record.created, "Normal", "Scheduled",
                             f"Successfully assigned {ns}/{name} to {script.node}", "default-scheduler", None))
            happened.append((record.created, "Normal", "Pulling", f"Pulling image \"{container['image']}\"",
                             "kubelet", path))
            if script.waiting:
                happened.append((record.created, "Warning", "Failed", script.waiting[1] or script.waiting[0],
                                 "kubelet", path))
            else:
                happened.append((record.start, "Normal", "Pulled",
                                 f"Successfully pulled image \"{container['image']}\"", "kubelet", path))
                happened.append((record.start, "Normal", "Created", f"Created container: {container['name']}",
                                 "kubelet", path))
                happened.append((record.start, "Normal", "Started", f"Started container {container['name']}",
                                 "kubelet", path))
            ended, _, _, pod_reason = record.end()
            if pod_reason == "DeadlineExceeded":
                happened.append((ended, "Normal", "DeadlineExceeded",
                                 "Pod was active on the node longer than the specified deadline", "kubelet", None))
            if record.deleted is not None and (ended is None or record.deleted <= ended):
                happened.append((record.deleted, "Normal", "Killing", f"Stopping container {container['name']}",
                                 "kubelet", path))
        events = []
        for i, (t, kind, reason, message, source, field_path) in enumerate(happened):
            if t > now:
                continue
            uid = f"{meta['uid'][:24]}{i:012d}"
            involved = {"kind": "Pod", "namespace": ns, "name": name, "uid": meta["uid"], "apiVersion": "v1",
                        "resourceVersion": meta["resourceVersion"]}
            if field_path:
                involved["fieldPath"] = field_path
            at = _ts(record.wall(t))
            events.append({"metadata": {"name": f"{name}.{uid[-16:]}", "namespace": ns, "uid": uid,
                                        "resourceVersion": str(int(meta["resourceVersion"]) + i + 1),
                                        "creationTimestamp": at},
                           "involvedObject": involved, "reason": reason, "message": message, "type": kind,
                           "source": {"component": source, **({"host": script.node} if source == "kubelet" else {})},
                           "firstTimestamp": at, "lastTimestamp": at, "count": 1, "eventTime": None,
                           "reportingComponent": source, "reportingInstance": script.node if source == "kubelet"
                           else ""})
        return events


def _qos(spec: dict) -> str:
    resources = [c.get("resources") or {} for c in spec["containers"]]
    if not any(r.get("limits") or r.get("requests") for r in resources):
        return "BestEffort"
    guaranteed = all(r.get("limits", {}).get(k) is not None and str(r.get("limits", {}).get(k)) ==
                     str(r.get("requests", {}).get(k, r.get("limits", {}).get(k)))
                     for r in resources for k in ("cpu", "memory"))
    return "Guaranteed" if guaranteed else "Burstable"


def _invalid(name: str, errors: list[tuple[str, str]]) -> _StatusError:
    causes = [{"reason": "FieldValueInvalid", "message": message, "field": path} for path, message in errors]
    listed = [f"{path}: {message}" for path, message in errors]
    summary = listed[0] if len(listed) == 1 else f"[{', '.join(listed)}]"
    return _StatusError(422, "Invalid", f"Pod \"{name}\" is invalid: {summary}",
                        {"name": name, "kind": "Pod", "causes": causes})


_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?:/(?P<sub>log))?)?$")
_ALL_PODS = "/api/v1/pods"
_EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")
_VERBS = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create", ("PATCH", True): "patch",
          ("DELETE", True): "delete"}


def _kind(path: str) -> str:
    if path.endswith("/log"):
        return "log"
    if _EVENTS.match(path):
        return "events"
    return "pods" if (_PODS.match(path) or path == _ALL_PODS) else "other"


def _flag(query: dict, key: str) -> bool:
    return query.get(key, ["false"])[0].lower() in ("true", "1")


class _Handler(DoubleHandler):
    server_version = "kube-apiserver (test double)"

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        double: KubernetesPodsDouble = self.double
        with double._lock:
            double.requests.append((self.command, url.path, {k: v[0] for k, v in query.items()}))
        try:
            if self.headers.get("Authorization", "") != f"Bearer {double.token}":
                raise _StatusError(401, "Unauthorized", "Unauthorized")
            if _flag(query, "watch"):
                raise _StatusError(400, "BadRequest", "watch is not served by this test double")
            self._serve(url.path, query, body)
        except _StatusError as exc:
            self._json(exc.code, exc.status())

    def _serve(self, path: str, query: dict, body: bytes) -> None:
        double: KubernetesPodsDouble = self.double
        one = lambda key: query.get(key, [None])[0]  # noqa: E731
        events = _EVENTS.match(path)
        if events and self.command == "GET":
            self._json(200, double.events(events["ns"], one("fieldSelector") or "", one("resourceVersion"),
                                          one("resourceVersionMatch")))
            return
        found = _PODS.match(path)
        if path == _ALL_PODS and self.command == "GET":
            self._json(200, double.list(None, one("labelSelector") or "", one("fieldSelector") or ""))
            return
        if not found:
            raise _StatusError(404, "NotFound", "the server could not find the requested resource")
        ns, name = found["ns"], found["name"]
        if found["sub"] == "log":
            if self.command != "GET":
                raise _StatusError(405, "MethodNotAllowed", "the server does not allow this method on the "
                                                            "requested resource")
            self._check("get", ns, name)
            self._log(ns, name, query)
            return
        verb = _VERBS.get((self.command, name is not None))
        if verb is None:
            raise _StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
        self._check(verb, ns, name)
        if verb == "get":
            self._json(200, double.get(ns, name))
        elif verb == "list":
            self._json(200, double.list(ns, one("labelSelector") or "", one("fieldSelector") or ""))
        elif verb == "create":
            self._json(201, double.create(ns, self._decode(body)))
        elif verb == "patch":
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            self._json(200, double.patch(ns, name, self._decode(body), content_type))
        else:
            options = self._decode(body) if body else {}
            grace = one("gracePeriodSeconds")
            grace = int(grace) if grace is not None else (options or {}).get("gracePeriodSeconds")
            self._json(200, double.delete(ns, name, grace))

    def _check(self, verb: str, ns: str, name: str | None) -> None:
        if verb in self.double._forbidden:
            raise _StatusError(403, "Forbidden", f"pods{f' {json.dumps(name)}' if name else ''} is forbidden: User "
                                                 f"\"system:serviceaccount:airflow:worker\" cannot {verb} resource "
                                                 f"\"pods\" in API group \"\" in the namespace \"{ns}\"",
                               {"name": name, "kind": "pods"} if name else {"kind": "pods"})

    @staticmethod
    def _decode(body: bytes):
        try:
            return json.loads(body or b"null")
        except ValueError as exc:
            raise _StatusError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from exc

    def _log(self, ns: str, name: str, query: dict) -> None:
        double: KubernetesPodsDouble = self.double
        one = lambda key: query.get(key, [None])[0]  # noqa: E731
        if one("sinceSeconds") and one("sinceTime"):
            raise _StatusError(422, "Invalid", "PodLogOptions \"\" is invalid: sinceSeconds: Forbidden: at most one "
                                               "of `sinceTime` or `sinceSeconds` may be specified")
        record, _ = double.log_lines(ns, name, one("container"), _flag(query, "previous"))
        timestamps, follow = _flag(query, "timestamps"), _flag(query, "follow")
        since = int(one("sinceSeconds")) if one("sinceSeconds") else None
        tail = int(one("tailLines")) if one("tailLines") else None
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=since) if since is not None else None

        def render(lines) -> bytes:
            return b"".join(((f"{_ts_nano(at)} " if timestamps else "") + text + "\n").encode()
                            for at, text in lines if cutoff is None or at >= cutoff)

        with double._lock:
            printed = record.log_lines(time.monotonic())
        first = printed[-tail:] if tail is not None else printed
        if tail == 0:
            first = []
        if not follow:
            payload = render(first)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._chunk(render(first))
            sent = len(printed)
            while not double._closing.is_set():
                now = time.monotonic()
                with double._lock:
                    double._collect(now)
                    alive = double._pods.get((ns, name)) is record
                    printed = record.log_lines(now)
                    ended, *_ = record.end()
                self._chunk(render(printed[sent:]))
                sent = len(printed)
                if not alive or (ended is not None and ended <= now):
                    break
                upcoming = [t for t in (record.next_line_at(sent), ended) if t is not None]
                time.sleep(max(0.0, min([0.05, *(t - now for t in upcoming)])) + 0.001)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def _json(self, status: int, doc: dict) -> None:
        payload = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
