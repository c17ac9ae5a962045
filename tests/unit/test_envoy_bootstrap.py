"""The gateway's bootstrap: routing only from the control plane (incremental xDS), both
listeners scoped by model, and only the statistics the judge and a person debugging read."""

import json
import re

from llm_release.stack.envoy import XDS_CLUSTER, write_bootstrap

PORTS = {"listen_port": 18000, "admin_port": 18001, "shadow_port": 18002, "control_plane": ("127.0.0.1", 18003)}


def bootstrap(tmp_path) -> dict:
    return json.loads(write_bootstrap(tmp_path, **PORTS).read_text())


def test_routing_comes_from_the_control_plane_over_incremental_xds(tmp_path):
    doc = bootstrap(tmp_path)
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC" and ads["grpc_services"][0]["envoy_grpc"]["cluster_name"] == XDS_CLUSTER
    assert "ads" in doc["dynamic_resources"]["cds_config"]
    (xds,) = doc["static_resources"]["clusters"]  # the only static cluster: every other one is pushed
    assert xds["name"] == XDS_CLUSTER
    endpoint = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "127.0.0.1", "port_value": 18003}


def test_both_listeners_pick_a_models_scope_from_its_path(tmp_path):
    listeners = bootstrap(tmp_path)["static_resources"]["listeners"]
    assert [l["name"] for l in listeners] == ["gateway", "shadow"]
    for listener in listeners:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert "rds" not in hcm and "route_config" not in hcm
        fragments = [f["header_value_extractor"] for f in hcm["scoped_routes"]["scope_key_builder"]["fragments"]]
        # "/v2/models/<m>/generate".split("/") -> ["", "v2", "models", "<m>", "generate"]
        assert [(f["name"], f["element_separator"], f["index"]) for f in fragments] == [(":path", "/", 2),
                                                                                      (":path", "/", 3)]
        assert "ads" in hcm["scoped_routes"]["scoped_rds"]["scoped_rds_config_source"]


def test_the_gateway_keeps_the_statistics_the_judge_reads_and_drops_the_other_per_cluster_ones(tmp_path):
    doc = bootstrap(tmp_path)
    assert doc["stats_flush_on_admin"] is True
    patterns = [p["safe_regex"]["regex"] for p in doc["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]]

    def kept(name: str) -> bool:
        return any(re.fullmatch(p, name) for p in patterns)

    for name in ("cluster.m_v2.upstream_rq_total", "cluster.m_v2.upstream_rq_5xx", "cluster.m_v2.upstream_rq_time",
                 "cluster.m~1_v2_shadow.upstream_rq_2xx", "cluster_manager.cds.update_success", "server.live",
                 "http.gateway.downstream_rq_total", "runtime.load_success", "listener.0.0.0.0_8000.downstream_cx_total"):
        assert kept(name), name
    for name in ("cluster.m_v2.upstream_rq_200", "cluster.m_v2.upstream_cx_rx_bytes_total",
                 "cluster.m_v2.lb_healthy_panic", "cluster.m_v2.upstream_rq_total.extra"):
        assert not kept(name), name
