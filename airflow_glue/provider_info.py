"""Provider metadata Airflow reads through the `apache_airflow_provider` entry point, so our
connection types appear in the connection form and our hooks in `airflow providers hooks`.

The connection forms are declared here, not in the hooks (Airflow 3.2+ reads `hook-name`,
`ui-field-behaviour` and `conn-fields` from this metadata without importing any hook). What a
person sees in Admin > Connections is exactly this: every extra field has a label and a
description, fields whose format matters end their description with an example (standard
fields get placeholders), and no field is required by the form
(an empty field is not an error until the hook that needs it says which one is missing and why).
"""

from __future__ import annotations


def _text(label: str, description: str, example: str | None = None, *, default: str | None = None) -> dict:
    """A free-text extra. Where the format matters, the description ends with an example: Airflow
    3.3's form has no placeholders for extra fields (and `examples` would offer the example as a
    value to pick)."""
    schema: dict = {"type": ["string", "null"]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": f"{description} Example: {example}" if example else description,
            "schema": schema}


def _integer(label: str, description: str, *, default: int | None = None, minimum: int = 1) -> dict:
    schema: dict = {"type": ["integer", "null"], "minimum": minimum}
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": description, "schema": schema}


def _choice(label: str, description: str, values: list[str], default: str | None = None) -> dict:
    schema: dict = {"type": ["string", "null"], "enum": [*values, None]}
    if default is not None:
        schema["default"] = default
    return {"label": label, "description": description, "schema": schema}


TRITON = {
    "connection-type": "triton",
    "hook-class-name": "llm_release_airflow.hooks.triton.TritonHook",
    "hook-name": "NVIDIA Triton Inference Server",
    "ui-field-behaviour": {
        "hidden-fields": ["login", "password"],
        "relabeling": {"host": "Triton host", "port": "HTTP port", "schema": "Scheme (http or https)"},
        "placeholders": {"host": "triton.serving.svc", "port": "8000", "schema": "http"},
    },
    "conn-fields": {
        "model_repository": _text(
            "Model repository path",
            "Where workers can read the model repository (the PVC's mount path). Lets a load send each "
            "model's config.pbtxt and refuse a version that is not installed before asking Triton.",
            "/models"),
        "network_timeout": _integer(
            "Request timeout (s)",
            "How long one request to Triton may take. Engine loads block until done and take minutes: keep "
            "this long (default 600).", default=600),
        "grpc_url": _text(
            "gRPC endpoint (host:port)",
            "Triton's gRPC endpoint. The nightly build's perf bench streams tokens over it.", "triton.serving.svc:8001"),
        "runtime_image": _text(
            "Serving image",
            "The tritonserver image this Triton runs. Engines built in another image are refused before any load "
            "or sync (provenance gate).", "nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3"),
        "runtime_trtllm_version": _text(
            "TensorRT-LLM version",
            "The TensorRT-LLM version of that image. Engines built with another version are refused.", "1.0.0"),
        "runtime_gpu_arch": _text(
            "GPU architecture",
            "The SM of the GPUs this Triton runs on. Engines built for another architecture are refused. Empty on "
            "CPU runtimes: the metrics endpoint then shows no GPU and the runtime reads as cpu.", "sm90"),
        "metrics_url": _text(
            "Metrics URL",
            "Triton's metrics endpoint, read to tell a CPU runtime from a GPU one.", "http://triton.serving.svc:8002/metrics"),
        "no_gpu_reason": _text(
            "No GPU (why)",
            "Leave empty for GPU runtimes: the canary judge then reads Triton's GPU memory before traffic is "
            "raised. On a CPU-only Triton, say why, and the GPU headroom gate is disabled with that reason in "
            "every verdict (never silently passed).", "CPU-only test stack"),
    },
}

GATEWAY = {
    "connection-type": "llm_gateway",
    "hook-class-name": "llm_release_airflow.hooks.gateway.GatewayHook",
    "hook-name": "LLM gateway (traffic router: Envoy, Istio, Gateway API)",
    "ui-field-behaviour": {
        "hidden-fields": ["login", "password"],
        "relabeling": {"host": "Gateway host", "port": "Gateway port", "schema": "Scheme (http or https)"},
        "placeholders": {"host": "llm-gateway.serving.svc", "port": "80", "schema": "http"},
    },
    "conn-fields": {
        "router": _choice(
            "Router",
            "How traffic between model versions is routed: envoy (we write Envoy's route and cluster files and "
            "verify through its admin API), istio (VirtualService + DestinationRule), gatewayapi (HTTPRoute).",
            ["envoy", "istio", "gatewayapi"], "envoy"),
        "topology": _choice(
            "Serving topology",
            "How release versions map onto Triton: versions (version directories of one model), "
            "model_per_release (model <m>_r<N>, for TensorRT-LLM engines), deployment_per_version (one Triton "
            "per version). Empty: versions for envoy, deployment_per_version for istio and gatewayapi.",
            ["versions", "model_per_release", "deployment_per_version"]),
        "admin_url": _text("Envoy admin URL (envoy)",
                           "Envoy's admin API, used to read back what Envoy serves after every change.",
                           "http://llm-gateway-admin.serving.svc:9901"),
        "control_plane_url": _text("Gateway control plane URL (envoy)",
                                   "The control plane (xds_server) Envoy gets its routing from; workers send "
                                   "routing changes to it.", "http://llm-gateway-xds.serving.svc:18090"),
        "upstream_host": _text("Triton host behind Envoy (envoy)",
                               "Host Envoy's version clusters send requests to.", "triton.serving.svc"),
        "upstream_port": _integer("Triton port behind Envoy (envoy)", "Triton's HTTP port as Envoy reaches it."),
        "shadow_host": _text("Shadow listener host (envoy)",
                             "Envoy's internal listener that receives mirrored copies (shadow traffic).",
                             "127.0.0.1"),
        "shadow_port": _integer("Shadow listener port (envoy)",
                                "Port of the shadow listener; empty disables shadow traffic."),
        "backends": {"label": "Triton per version (envoy, deployment_per_version)",
                     "description": 'Version -> [host, port] of the Triton serving it, as JSON, e.g. '
                                    '{"1": ["triton-v1.serving.svc", 8000]}.',
                     "schema": {"type": ["object", "null"]}},
        "namespace": _text("Kubernetes namespace (istio, gatewayapi)",
                           "Namespace of the VirtualService / HTTPRoute and the Triton services.", "serving"),
        "virtual_service": _text("VirtualService (istio)", "Name of the VirtualService that routes the models.",
                                 "llm-gateway"),
        "destination_rule": _text("DestinationRule (istio)",
                                  "Name of the DestinationRule holding one subset per version (default: the "
                                  "VirtualService's name).", "llm-gateway"),
        "service_host": _text("Triton Service host (istio)",
                              "The Kubernetes Service host the VirtualService routes to.",
                              "triton.serving.svc.cluster.local"),
        "http_route": _text("HTTPRoute (gatewayapi)", "Name of the HTTPRoute that routes the models.", "llm-gateway"),
        "service_template": _text("Service per version (gatewayapi)",
                                  "Name of the Service serving each version; {model} and {version} are replaced.",
                                  "{model}-v{version}", default="{model}-v{version}"),
        "shared_service": _text("Shared Triton Service (gatewayapi, one Triton for all versions)",
                                "The one Service every route goes to when versions share a Triton (topology versions "
                                "or model_per_release).", "triton"),
        "kubeconfig": _text("kubeconfig path (istio, gatewayapi)",
                            "Only outside a cluster: a kubeconfig file on the workers. Empty inside a pod (its "
                            "service account is used).", "/home/airflow/.kube/config"),
        "context": _text("kubeconfig context (istio, gatewayapi)",
                         "The context to use from the kubeconfig (default: its current context).", "prod-eu"),
    },
}

ARTIFACTORY = {
    "connection-type": "artifactory",
    "hook-class-name": "llm_release_airflow.hooks.artifactory.ArtifactoryHook",
    "hook-name": "JFrog Artifactory (engines)",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {"host": "Artifactory URL", "password": "Access token or password",
                       "login": "User (basic auth only)"},
        "placeholders": {"host": "https://artifactory.example.com/artifactory",
                         "login": "empty with an access token"},
    },
    "conn-fields": {
        "repo": _text("Repository", "Key of the generic repository holding the engines (required).",
                      "llm-engines"),
        "prefix": _text("Path prefix", "Folder in the repository above <model>/<version>/ (optional).",
                        "prod/engines"),
    },
}

PROMETHEUS = {
    "connection-type": "prometheus",
    "hook-class-name": "llm_release_airflow.hooks.prometheus.PrometheusHook",
    "hook-name": "Prometheus (release metrics)",
    "ui-field-behaviour": {
        "hidden-fields": ["login", "password"],
        "relabeling": {"host": "Prometheus host", "port": "Port", "schema": "Scheme (http or https)"},
        "placeholders": {"host": "prometheus.monitoring.svc", "port": "9090", "schema": "http"},
    },
}

OCI_REGISTRY = {
    "connection-type": "oci_registry",
    "hook-class-name": "llm_release_airflow.hooks.oci_registry.OciRegistryHook",
    "hook-name": "OCI registry (engines)",
    "ui-field-behaviour": {
        "hidden-fields": ["schema"],
        "relabeling": {"host": "Registry host", "login": "User", "password": "Password or token"},
        "placeholders": {"host": "registry.example.com", "port": "443"},
    },
    "conn-fields": {
        "namespace": _text("Namespace", "Repository namespace the engines are pushed under (default llm-release).",
                           "llm-release", default="llm-release"),
        "insecure": {"label": "Plain HTTP",
                     "description": "Talk to the registry over HTTP instead of HTTPS (local registries only).",
                     "schema": {"type": ["boolean", "null"], "default": False}},
    },
}

CONNECTION_TYPES = [TRITON, GATEWAY, ARTIFACTORY, PROMETHEUS, OCI_REGISTRY]


def get_provider_info() -> dict:
    return {
        "package-name": "llm-release",
        "name": "LLM Release",
        "description": "Release LLM engines served by NVIDIA Triton: build, publish, sync, load, shift traffic, judge canaries, roll back.",
        "versions": ["0.1.0"],
        "connection-types": CONNECTION_TYPES,
        "hooks": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.hooks.triton", "llm_release_airflow.hooks.gateway", "llm_release_airflow.hooks.prometheus",
            "llm_release_airflow.hooks.artifactory", "llm_release_airflow.hooks.oci_registry"]}],
        "operators": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.operators.triton_load", "llm_release_airflow.operators.artifacts",
            "llm_release_airflow.operators.traffic", "llm_release_airflow.operators.gates",
            "llm_release_airflow.operators.build"]}],
        "sensors": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.sensors.canary_analysis"]}],
        "triggers": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.sensors.canary_trigger"]}],
        "plugins": [{"name": "llm_release", "plugin-class": "llm_release_airflow.plugins.llm_release_plugin.LLMReleasePlugin"}],
    }
