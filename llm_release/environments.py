"""Where a release runs: one environment spec, and one factory for everything built from it.

An environment (dev, staging, production; possibly several regions each) is a Triton
deployment with its serving topology, the gateway in front of it (a router kind and its
settings), the Prometheus that watches both, and the release rules that hold there (whether a
person approves the final step, which environment a version must have passed first). The
router, the served-versions object and the metrics client are all built here from that one
spec, so the topology is stated once: a traffic shift in the model-per-release topology checks
readiness of `<m>_r<N>`, the same model the load step loaded.

Specs come from a JSON document (the Airflow Variable `llm_release_environments` once its
connection ids are resolved, or the file the local stack writes) and are validated eagerly:
every error names the field, e.g. `environments[1] (production/eu).router.control_plane_url: is missing`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from llm_release.errors import SpecError

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
TOPOLOGIES = ("versions", "model_per_release", "deployment_per_version")
ROUTER_KINDS = ("envoy", "istio", "gatewayapi")
ROUTER_SETTINGS = {  # kind -> (required, optional)
    "envoy": (("admin_url", "control_plane_url"), ("upstream", "shadow_listener")),
    "istio": (("namespace", "virtual_service", "service_host"), ("destination_rule", "kubeconfig", "context")),
    "gatewayapi": (("namespace", "http_route"), ("service_template", "shared_service", "kubeconfig", "context")),
}


def _url(value, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
        raise SpecError(where, f"{value!r} is not an http(s) URL", "write e.g. http://triton.serving.svc:8000")
    return value.rstrip("/")


def _host_port(value, where: str) -> tuple[str, int]:
    """"host:port" or [host, port] -> (host, port)."""
    if isinstance(value, str) and ":" in value:
        host, _, port = value.rpartition(":")
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        host, port = value
    else:
        raise SpecError(where, f"{value!r} is not host:port", "write e.g. 127.0.0.1:8000")
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = 0
    if not host or not 0 < port < 65536:
        raise SpecError(where, f"{value!r} is not host:port", "write e.g. 127.0.0.1:8000")
    return str(host), port


def _only(doc: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}", "is not a known setting", f"known: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class TritonRuntime:
    """What an environment's Triton runs, for the provenance gate (llm_release.provenance).

    `image` and `trtllm_version` cannot be read from Triton and are declared; `gpu_arch` is
    declared on GPU runtimes (Triton's metrics name GPUs by UUID only), and read as "cpu" from
    `metrics_url` (Triton's metrics endpoint) when that shows no GPU. Declaring it turns the
    gate on for every load in this environment.
    """

    image: str | None = None
    trtllm_version: str | None = None
    gpu_arch: str | None = None
    metrics_url: str | None = None

    @classmethod
    def from_dict(cls, doc, where: str) -> "TritonRuntime":
        from llm_release.provenance import RUNTIME_FIELDS, check_declared

        if not isinstance(doc, dict) or not doc:
            raise SpecError(where, f"{doc!r} is not a non-empty object",
                            'write e.g. {"image": "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3", '
                            '"trtllm_version": "1.0.0", "gpu_arch": "sm90"}')
        _only(doc, set(RUNTIME_FIELDS) | {"metrics_url"}, where)
        values = check_declared(doc, where)
        metrics = _url(doc["metrics_url"], f"{where}.metrics_url") if doc.get("metrics_url") is not None else None
        return cls(metrics_url=metrics, **values)

    def to_dict(self) -> dict:
        return {k: v for k, v in (("image", self.image), ("trtllm_version", self.trtllm_version),
                                  ("gpu_arch", self.gpu_arch), ("metrics_url", self.metrics_url)) if v is not None}


@dataclass(frozen=True)
class TritonSpec:
    """The Triton serving a model's versions, and how release versions map onto it (llm_release.serving)."""

    url: str
    topology: str = "versions"
    model_repository: str | None = None
    deployments: dict[int, str] = field(default_factory=dict)  # deployment_per_version: version -> URL
    release_suffix: str = "_r"  # model_per_release: release N of m is the Triton model m<suffix>N
    runtime: TritonRuntime | None = None  # declared: loads here pass the provenance gate
    grpc_url: str | None = None  # host:port of Triton's gRPC endpoint (the perf bench streams over it)

    @classmethod
    def from_dict(cls, doc, where: str) -> "TritonSpec":
        if not isinstance(doc, dict):
            raise SpecError(where, f"{doc!r} is not an object", 'write e.g. {"url": "http://triton:8000"}')
        _only(doc, {"url", "topology", "model_repository", "deployments", "release_suffix", "runtime", "grpc_url"},
              where)
        topology = doc.get("topology") or "versions"
        if topology not in TOPOLOGIES:
            raise SpecError(f"{where}.topology", f"{topology!r} is not a serving topology", f"use one of {', '.join(TOPOLOGIES)}")
        deployments = {}
        for key, url in (doc.get("deployments") or {}).items():
            if not str(key).isdigit() or int(key) < 1:
                raise SpecError(f"{where}.deployments", f"{key!r} is not a version", "key deployments by version number")
            deployments[int(key)] = _url(url, f"{where}.deployments[{key}]")
        if topology == "deployment_per_version" and not deployments:
            raise SpecError(f"{where}.deployments", "is empty", "deployment_per_version needs the URL of each version's Triton")
        suffix = doc.get("release_suffix") or "_r"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,8}", suffix):
            raise SpecError(f"{where}.release_suffix", f"{suffix!r} is not a model-name suffix", "use e.g. _r")
        repo = doc.get("model_repository")
        if repo is not None and not isinstance(repo, str):
            raise SpecError(f"{where}.model_repository", f"{repo!r} is not a path", "give the repository's path")
        url = doc.get("url")
        if url is None and deployments:
            url = deployments[min(deployments)]
        runtime = doc.get("runtime")
        runtime = TritonRuntime.from_dict(runtime, f"{where}.runtime") if runtime is not None else None
        grpc_url = doc.get("grpc_url")
        if grpc_url is not None and (not isinstance(grpc_url, str)
                                     or not re.fullmatch(r"[A-Za-z0-9_.\[\]:-]+:[0-9]{1,5}", grpc_url)):
            raise SpecError(f"{where}.grpc_url", f"{grpc_url!r} is not host:port", "write e.g. triton:8001")
        return cls(_url(url, f"{where}.url"), topology, repo or None, deployments, suffix, runtime, grpc_url)

    def to_dict(self) -> dict:
        doc = {"url": self.url, "topology": self.topology, "model_repository": self.model_repository,
               "deployments": {str(v): u for v, u in sorted(self.deployments.items())},
               "release_suffix": self.release_suffix}
        if self.runtime is not None:
            doc["runtime"] = self.runtime.to_dict()
        if self.grpc_url is not None:
            doc["grpc_url"] = self.grpc_url
        return doc


@dataclass(frozen=True)
class RouterSpec:
    """The gateway's router kind and its settings (the keys of ROUTER_SETTINGS)."""

    kind: str
    settings: dict

    @classmethod
    def from_dict(cls, doc, where: str) -> "RouterSpec":
        if not isinstance(doc, dict):
            raise SpecError(where, f"{doc!r} is not an object", 'write e.g. {"kind": "envoy", "admin_url": ...}')
        kind = doc.get("kind") or "envoy"
        if kind not in ROUTER_KINDS:
            raise SpecError(f"{where}.kind", f"{kind!r} is not a known router", f"use one of {', '.join(ROUTER_KINDS)}")
        required, optional = ROUTER_SETTINGS[kind]
        settings = {k: v for k, v in doc.items() if k != "kind" and v not in (None, "")}
        _only(settings, set(required) | set(optional), where)
        missing = [k for k in required if k not in settings]
        if missing:
            raise SpecError(f"{where}.{missing[0]}", "is missing", f"the {kind} router needs {', '.join(required)}")
        if kind == "envoy":
            settings["admin_url"] = _url(settings["admin_url"], f"{where}.admin_url")
            for key in ("upstream", "shadow_listener"):
                if key in settings:
                    settings[key] = "%s:%d" % _host_port(settings[key], f"{where}.{key}")
        return cls(kind, settings)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.settings}


@dataclass(frozen=True)
class Environment:
    """One place a release runs (a name and a region), with the rules that hold there."""

    name: str
    region: str
    triton: TritonSpec
    router: RouterSpec
    prometheus_url: str
    gateway_url: str | None = None  # what clients call; probes and live load go through it
    approval_required: bool = False  # a person approves the final step (production)
    requires_passed: str | None = None  # a version must have passed this environment first
    disabled_checks: dict[str, str] = field(default_factory=dict)  # judge checks this runtime cannot feed -> why
    scheduled_retirement: str = "retire"  # what a scheduled deprecation run does here: retire, or dry_run

    @property
    def key(self) -> str:
        return f"{self.name}/{self.region}"

    @classmethod
    def from_dict(cls, doc, where: str = "environment") -> "Environment":
        if not isinstance(doc, dict):
            raise SpecError(where, f"{doc!r} is not an object", "write one JSON object per environment")
        name, region = doc.get("name"), doc.get("region") or "default"
        for key, value in (("name", name), ("region", region)):
            if not isinstance(value, str) or not NAME.match(value):
                raise SpecError(f"{where}.{key}", f"{value!r} is not a valid {key}",
                                "use lower-case letters, digits, - and _, starting with a letter")
        where = f"{where} ({name}/{region})"
        _only(doc, {"name", "region", "triton", "router", "prometheus_url", "gateway_url", "approval_required",
                    "requires_passed", "disabled_checks", "scheduled_retirement", "description"}, where)
        requires = doc.get("requires_passed")
        if requires is not None and (not isinstance(requires, str) or not NAME.match(requires) or requires == name):
            raise SpecError(f"{where}.requires_passed", f"{requires!r} is not another environment's name",
                            "name the environment a version must pass first, e.g. staging")
        approval = doc.get("approval_required", name == "production")
        if not isinstance(approval, bool):
            raise SpecError(f"{where}.approval_required", f"{approval!r} is not true or false", "write true or false")
        disabled = doc.get("disabled_checks") or {}
        if not isinstance(disabled, dict) or not all(isinstance(v, str) and v for v in disabled.values()):
            raise SpecError(f"{where}.disabled_checks", f"{disabled!r} is not check -> reason",
                            'write e.g. {"gpu_headroom": "CPU runtime"}')
        scheduled = doc.get("scheduled_retirement") or "retire"
        if scheduled not in ("retire", "dry_run"):
            raise SpecError(f"{where}.scheduled_retirement", f"{scheduled!r} is not a mode",
                            "use retire (scheduled deprecation runs retire) or dry_run (they only report)")
        return cls(name=name, region=region, triton=TritonSpec.from_dict(doc.get("triton"), f"{where}.triton"),
                   router=RouterSpec.from_dict(doc.get("router"), f"{where}.router"),
                   prometheus_url=_url(doc.get("prometheus_url"), f"{where}.prometheus_url"),
                   gateway_url=_url(doc["gateway_url"], f"{where}.gateway_url") if doc.get("gateway_url") else None,
                   approval_required=approval, requires_passed=requires, disabled_checks=dict(disabled),
                   scheduled_retirement=scheduled)

    def to_dict(self) -> dict:
        return {"name": self.name, "region": self.region, "triton": self.triton.to_dict(),
                "router": self.router.to_dict(), "prometheus_url": self.prometheus_url, "gateway_url": self.gateway_url,
                "approval_required": self.approval_required, "requires_passed": self.requires_passed,
                "disabled_checks": dict(self.disabled_checks), "scheduled_retirement": self.scheduled_retirement}

    # -- the one factory --------------------------------------------------------------------
    def triton_control(self, url: str | None = None):
        from llm_release.triton_control import TritonControl

        return TritonControl(url or self.triton.url, model_repository=self.triton.model_repository)

    def served_versions(self):
        """How release versions map onto Triton here (llm_release.serving)."""
        from llm_release.serving import DeploymentPerVersion, ModelPerRelease, PlainVersions

        if self.triton.topology == "model_per_release":
            return ModelPerRelease(self.triton_control(), suffix=self.triton.release_suffix,
                                   runtime=self._runtime(self.triton.url))
        if self.triton.topology == "deployment_per_version":
            runtimes = {v: self._runtime(u, metrics=False) for v, u in self.triton.deployments.items()}
            return DeploymentPerVersion({v: self.triton_control(u) for v, u in self.triton.deployments.items()},
                                        runtime=runtimes if self.triton.runtime else None)
        return PlainVersions(self.triton_control(), runtime=self._runtime(self.triton.url))

    def _runtime(self, url: str, *, metrics: bool = True):
        """The provenance gate's runtime reader, when this environment declares its runtime."""
        from llm_release.provenance import runtime_reader

        declared = self.triton.runtime
        if declared is None:
            return None
        return runtime_reader(url, metrics_url=declared.metrics_url if metrics else None, declared=declared)

    def router_instance(self):
        """The traffic router for this environment's gateway, rendered for its topology."""
        return build_router(self.router, topology=self.triton.topology, upstream=_netloc(self.triton.url),
                            backends={v: _netloc(u) for v, u in self.triton.deployments.items()})

    def metrics(self):
        from llm_release.metrics.prometheus import PrometheusClient

        return PrometheusClient(self.prometheus_url)

    def triton_model(self, model: str, version: int) -> str:
        """The Triton model that serves release `version` of `model` (what metrics and probes name)."""
        return f"{model}{self.triton.release_suffix}{version}" if self.triton.topology == "model_per_release" else model


def build_router(spec: RouterSpec, *, topology: str = "versions", upstream: str | None = None,
                 backends: dict[int, str] | None = None):
    """The one place a TrafficRouter is constructed (Airflow hook, CLI, local stack, releases).

    :param upstream: host:port of the Triton serving every version (Envoy, shared topologies),
        unless the router's own `upstream` setting names another (e.g. a Service in front of it).
    :param backends: version -> host:port of each version's own Triton (deployment_per_version).
    """
    settings = spec.settings
    if spec.kind == "envoy":
        from llm_release.routing.envoy import EnvoyRouter

        where = settings.get("upstream") and "router.upstream" or "triton.url"
        upstream = settings.get("upstream") or upstream
        if not upstream:
            raise SpecError("router.upstream", "is missing", "give the Triton host:port Envoy forwards to")
        shadow = _host_port(settings["shadow_listener"], "router.shadow_listener") if settings.get("shadow_listener") else None
        return EnvoyRouter(settings["control_plane_url"], settings["admin_url"], _host_port(upstream, where),
                           topology=topology, shadow_listener=shadow,
                           backends={v: _host_port(b, f"triton.deployments[{v}]") for v, b in (backends or {}).items()})
    from llm_release.routing.kubernetes import api_client_from_environment

    client = api_client_from_environment(kubeconfig=settings.get("kubeconfig"), context=settings.get("context"))
    return build_kubernetes_router(spec, client, topology=topology)


def build_kubernetes_router(spec: RouterSpec, client, *, topology: str = "deployment_per_version"):
    """Istio or Gateway API objects through `client` (a kubernetes ApiClient)."""
    settings = spec.settings
    if spec.kind == "istio":
        from llm_release.routing.istio import IstioRouter

        # The chart names the DestinationRule like the VirtualService.
        return IstioRouter(client, namespace=settings["namespace"], virtual_service=settings["virtual_service"],
                           host=settings["service_host"],
                           destination_rule=settings.get("destination_rule") or settings["virtual_service"],
                           topology=topology)
    if spec.kind == "gatewayapi":
        from llm_release.routing.gatewayapi import GatewayApiRouter

        return GatewayApiRouter(client, namespace=settings["namespace"], http_route=settings["http_route"],
                                service_template=settings.get("service_template") or "{model}-v{version}",
                                shared_service=settings.get("shared_service") or None, topology=topology)
    raise SpecError("router.kind", f"{spec.kind!r} is not a Kubernetes router", "use istio or gatewayapi")


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class EnvironmentSet:
    """Every environment a deployment knows, by name and region; the lookups say what exists."""

    def __init__(self, environments: list[Environment]):
        seen = set()
        for env in environments:
            if env.key in seen:
                raise SpecError("environments", f"{env.key} is defined twice", "give each name/region once")
            seen.add(env.key)
        names = {e.name for e in environments}
        for env in environments:
            if env.requires_passed and env.requires_passed not in names:
                raise SpecError(f"environments ({env.key}).requires_passed", f"{env.requires_passed!r} is not defined",
                                f"known environments: {', '.join(sorted(names))}")
        self.environments = list(environments)

    @classmethod
    def from_doc(cls, doc, where: str = "environments") -> "EnvironmentSet":
        """A JSON list of environment objects (or {"environments": [...]}), or its text."""
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError as exc:
                raise SpecError(where, f"is not JSON ({exc})", "write a JSON list of environments") from exc
        if isinstance(doc, dict) and "environments" in doc:
            doc = doc["environments"]
        if not isinstance(doc, list) or not doc:
            raise SpecError(where, "is not a non-empty list", "write a JSON list of environment objects")
        return cls([Environment.from_dict(item, f"{where}[{i}]") for i, item in enumerate(doc)])

    @classmethod
    def from_file(cls, path) -> "EnvironmentSet":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError("environments file", f"cannot read {path}: {exc.strerror}",
                            "start the local stack (llm-release stack up) or give --environments") from exc
        return cls.from_doc(text, where=str(path))

    @property
    def names(self) -> list[str]:
        return sorted({e.name for e in self.environments})

    def regions(self, name: str) -> list[Environment]:
        found = [e for e in self.environments if e.name == name]
        if not found:
            raise SpecError("environment", f"{name!r} is not a known environment", f"known: {', '.join(self.names)}")
        return found

    def get(self, name: str, region: str | None = None) -> Environment:
        found = self.regions(name)
        if region is None:
            if len(found) > 1:
                raise SpecError("region", f"{name} has regions {', '.join(e.region for e in found)}", "name one")
            return found[0]
        for env in found:
            if env.region == region:
                return env
        raise SpecError("region", f"{region!r} is not a region of {name}", f"known: {', '.join(e.region for e in found)}")

    def to_list(self) -> list[dict]:
        return [e.to_dict() for e in self.environments]
