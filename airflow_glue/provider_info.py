"""Provider metadata Airflow reads through the `apache_airflow_provider` entry point, so our
connection types appear in the connection form and our hooks in `airflow providers hooks`."""

from __future__ import annotations


def get_provider_info() -> dict:
    return {
        "package-name": "llm-release",
        "name": "LLM Release",
        "description": "Release LLM engines served by NVIDIA Triton: build, publish, sync, load, shift traffic, gate, roll back.",
        "versions": ["0.1.0"],
        "connection-types": [
            {
                "connection-type": "triton",
                "hook-class-name": "llm_release_airflow.hooks.triton.TritonHook",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password"],
                    "relabeling": {"host": "Triton host", "port": "HTTP port", "schema": "Scheme (http/https)"},
                    "placeholders": {"host": "triton.serving.svc", "port": "8000", "schema": "http"},
                },
                "conn-fields": {
                    "model_repository": {"label": "Model repository path",
                                         "description": "Where this worker can read config.pbtxt files (optional)",
                                         "schema": {"type": ["string", "null"]}},
                    "network_timeout": {"label": "Request timeout (s)",
                                        "description": "Engine loads take minutes; keep this long",
                                        "schema": {"type": ["integer", "null"], "default": 600}},
                },
            },
            {
                "connection-type": "llm_gateway",
                "hook-class-name": "llm_release_airflow.hooks.gateway.GatewayHook",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password"],
                    "relabeling": {"host": "Gateway host", "port": "Gateway port"},
                },
                "conn-fields": {
                    "router": {"label": "Router", "schema": {"type": "string", "enum": ["envoy", "istio", "gatewayapi"],
                                                             "default": "envoy"}},
                    "namespace": {"label": "Namespace (istio, gatewayapi)", "schema": {"type": ["string", "null"]}},
                    "virtual_service": {"label": "VirtualService (istio)", "schema": {"type": ["string", "null"]}},
                    "host": {"label": "Triton Service host (istio)", "schema": {"type": ["string", "null"]}},
                    "http_route": {"label": "HTTPRoute (gatewayapi)", "schema": {"type": ["string", "null"]}},
                    "admin_url": {"label": "Envoy admin URL", "schema": {"type": ["string", "null"]}},
                    "xds_dir": {"label": "Envoy xDS directory", "schema": {"type": ["string", "null"]}},
                },
            },
            {
                "connection-type": "artifactory",
                "hook-class-name": "llm_release_airflow.hooks.artifactory.ArtifactoryHook",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Artifactory URL", "password": "Access token or password",
                                   "login": "User (basic auth only)"},
                    "placeholders": {"host": "https://artifactory.example.com/artifactory"},
                },
                "conn-fields": {
                    "repo": {"label": "Repository", "description": "Key of the generic repository holding the engines",
                             "schema": {"type": "string"}},
                    "prefix": {"label": "Path prefix", "description": "Folder in the repository above <model>/<version>/ (optional)",
                               "schema": {"type": ["string", "null"]}},
                },
            },
            {
                "connection-type": "prometheus",
                "hook-class-name": "llm_release_airflow.hooks.prometheus.PrometheusHook",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "password"],
                    "relabeling": {"host": "Prometheus host", "port": "Port"},
                    "placeholders": {"port": "9090", "schema": "http"},
                },
            },
            {
                "connection-type": "oci_registry",
                "hook-class-name": "llm_release_airflow.hooks.oci_registry.OciRegistryHook",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"host": "Registry host", "login": "User", "password": "Password or token"},
                    "placeholders": {"host": "registry.example.com", "port": "443"},
                },
                "conn-fields": {
                    "namespace": {"label": "Namespace", "description": "Repository namespace for engines",
                                  "schema": {"type": ["string", "null"], "default": "llm-release"}},
                    "insecure": {"label": "Plain HTTP", "schema": {"type": ["boolean", "null"], "default": False}},
                },
            },
        ],
        "hooks": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.hooks.triton", "llm_release_airflow.hooks.gateway", "llm_release_airflow.hooks.prometheus",
            "llm_release_airflow.hooks.artifactory", "llm_release_airflow.hooks.oci_registry"]}],
        "operators": [{"integration-name": "LLM Release", "python-modules": [
            "llm_release_airflow.operators.triton_load", "llm_release_airflow.operators.artifacts",
            "llm_release_airflow.operators.traffic"]}],
        "plugins": [{"name": "llm_release", "plugin-class": "llm_release_airflow.plugins.llm_release_plugin.LLMReleasePlugin"}],
    }
