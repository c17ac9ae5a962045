"""Which versions a retirement keeps and why, and how requests over a window are counted."""

from __future__ import annotations

import time

import pytest

from llm_release.errors import MetricsError, SpecError
from llm_release.metrics.prometheus import Series
from llm_release.release.retirement import (RetentionPolicy, RetirementPlan, RetirementRefused, plan_retirement,
                                            retire_version, stable_version, traffic_in_window)
from llm_release.routing.state import RoutingState
from llm_release.serving import ModelPerRelease

M = "llama"


def plan(installed, routing=None, ready_elsewhere=None, **policy) -> RetirementPlan:
    return plan_retirement(M, installed=installed, routing=routing, ready_elsewhere=ready_elsewhere or {},
                           policy=RetentionPolicy(**policy))


# -- the plan --------------------------------------------------------------------------------------
def test_the_newest_are_kept_and_the_rest_retired_oldest_first():
    result = plan([4, 1, 3, 2, 5], RoutingState(M, {5: 100}))
    assert result.keep == {4: "one of the 2 newest", 5: "stable; one of the 2 newest"}
    assert result.retire == [1, 2, 3]


def test_keep_newest_counts_installed_versions():
    assert plan([1, 2, 3, 4, 5], RoutingState(M, {5: 100}), keep_newest=3).retire == [1, 2]
    assert plan([1, 2, 3, 4, 5], RoutingState(M, {5: 100}), keep_newest=1).keep == {5: "stable; the newest"}


def test_the_stable_version_is_never_retired_however_old():
    result = plan([1, 2, 3, 4, 5], RoutingState(M, {1: 100}), keep_newest=1)
    assert result.keep == {1: "stable", 5: "the newest"}
    assert result.retire == [2, 3, 4]


def test_stable_is_the_largest_weight_and_the_other_weights_serve_traffic():
    result = plan([1, 2, 3, 4, 5, 6], RoutingState(M, {2: 60, 3: 40}))
    assert result.keep[2] == "stable"
    assert result.keep[3] == "serving traffic"
    assert result.retire == [1, 4]
    assert stable_version(RoutingState(M, {2: 40, 3: 60})) == 3
    assert stable_version(RoutingState(M, {2: 50, 3: 50})) == 2  # a tie: the older one
    assert stable_version(None) is None


def test_a_header_route_keeps_its_version():
    result = plan([1, 2, 3, 4, 5], RoutingState(M, {5: 100}, header="x-experiment", header_routes={"B": 2}))
    assert result.keep[2] == "serving traffic"
    assert result.retire == [1, 3]


def test_a_mirror_keeps_its_version():
    result = plan([1, 2, 3, 4, 5], RoutingState(M, {5: 100}, mirror_version=1, mirror_percent=10))
    assert result.keep[1] == "serving traffic"
    assert result.retire == [2, 3]


def test_a_version_ready_in_another_environment_is_kept_with_their_names():
    result = plan([1, 2, 3, 4, 5], RoutingState(M, {5: 100}), ready_elsewhere={2: ["staging/eu", "production/us"],
                                                                                 3: []})
    assert result.keep[2] == "READY in staging/eu, production/us"
    assert result.retire == [1, 3]


def test_without_routing_only_the_newest_stay():
    result = plan([3, 1, 2])
    assert result.keep == {2: "one of the 2 newest", 3: "one of the 2 newest"}
    assert result.retire == [1]
    assert plan([]).retire == [] and plan([]).keep == {}


def test_a_routed_version_that_is_not_installed_here_is_listed_as_kept():
    result = plan([1, 2, 3, 4], RoutingState(M, {9: 100}))
    assert result.keep[9] == "stable"
    assert result.retire == [1, 2]


def test_the_plan_has_a_json_form():
    assert plan([1, 2, 3], RoutingState(M, {3: 100})).to_dict() == {
        "model": M, "keep": {"2": "one of the 2 newest", "3": "stable; one of the 2 newest"}, "retire": [1]}


@pytest.mark.parametrize("policy, field", [
    ({"keep_newest": 0}, "keep_newest"),
    ({"keep_newest": -1}, "keep_newest"),
    ({"keep_newest": True}, "keep_newest"),
    ({"keep_newest": 2.0}, "keep_newest"),
    ({"zero_traffic_window_s": 0}, "zero_traffic_window_s"),
    ({"zero_traffic_window_s": -60}, "zero_traffic_window_s"),
    ({"zero_traffic_window_s": float("inf")}, "zero_traffic_window_s"),
    ({"zero_traffic_window_s": "1h"}, "zero_traffic_window_s"),
    ({"remove_from_store": "yes"}, "remove_from_store"),
])
def test_a_bad_policy_is_refused_naming_the_field(policy, field):
    with pytest.raises(SpecError) as err:
        RetentionPolicy(**policy)
    assert err.value.field == field


@pytest.mark.parametrize("kwargs, field", [
    ({"installed": [1, 0]}, "installed"),
    ({"installed": ["2"]}, "installed"),
    ({"installed": [1], "routing": RoutingState("other", {1: 100})}, "routing"),
    ({"installed": [1], "ready_elsewhere": {0: ["staging"]}}, "ready_elsewhere"),
    ({"installed": [1], "ready_elsewhere": {1: "staging"}}, "ready_elsewhere"),
])
def test_bad_facts_are_refused_naming_the_field(kwargs, field):
    kwargs = {"routing": None, "ready_elsewhere": {}, **kwargs}
    with pytest.raises(SpecError) as err:
        plan_retirement(M, policy=RetentionPolicy(), **kwargs)
    assert err.value.field == field


# -- requests over a window --------------------------------------------------------------------------
class FakePrometheus:
    """query_range answers from canned series: the version's clusters, and Envoy as a whole."""

    base_url = "http://prometheus.test"

    def __init__(self, series: list[Series], gateway_seen: bool = True, triton: list[Series] | None = None):
        self.series = series
        self.gateway_seen = gateway_seen
        self.triton = triton or []
        self.queries: list[tuple[str, float, float, float]] = []

    def query_range(self, promql, start, end, step_s):
        self.queries.append((promql, start, end, step_s))
        if promql.startswith("count("):
            return [Series({}, [(end, 12.0)])] if self.gateway_seen else []
        source = self.triton if "nv_inference_request" in promql else self.series
        return [Series(s.labels, [(t, v) for t, v in s.points if start <= t <= end]) for s in source]


def counter(cluster: str, values: dict[float, float], instance: str = "envoy:9901") -> Series:
    return Series({"envoy_cluster_name": cluster, "instance": instance}, sorted(values.items()))


def test_requests_are_counted_on_the_version_and_its_shadow_cluster_since_the_window_start():
    prom = FakePrometheus([counter("llama_v3", {940: 5, 950: 5, 960: 9, 1000: 12}),
                           counter("llama_v3_shadow", {950: 2, 980: 4, 1000: 4})])
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 7 + 2
    promql, start, end, step = prom.queries[0]
    assert (start, end, step) == (950, 1000, 10)
    assert 'envoy_cluster_name=~"llama_v3|llama_v3_shadow"' in promql
    assert promql.startswith("envoy_cluster_upstream_rq_total{")


def test_a_counter_reset_inside_the_window_is_counted_not_subtracted():
    prom = FakePrometheus([counter("llama_v3", {950: 40, 960: 45, 970: 2, 1000: 6})])
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 5 + 2 + 4


def test_a_cluster_created_inside_the_window_counts_from_zero():
    prom = FakePrometheus([counter("llama_v3", {970: 3, 1000: 3})])
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 3


def test_each_envoy_replica_is_a_series_of_its_own():
    prom = FakePrometheus([counter("llama_v3", {950: 10, 1000: 11}, "a"), counter("llama_v3", {950: 0, 1000: 2}, "b")])
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 3


def test_a_flat_counter_is_zero():
    prom = FakePrometheus([counter("llama_v3", {950: 42, 960: 42, 1000: 42})])
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 0


def test_no_series_is_zero_only_when_prometheus_sees_the_gateway():
    assert traffic_in_window(FakePrometheus([]), M, 3, window_s=50, at=1000, step_s=10) == 0
    with pytest.raises(MetricsError, match="does not scrape the gateway"):
        traffic_in_window(FakePrometheus([], gateway_seen=False), M, 3, window_s=50, at=1000, step_s=10)


def test_an_unreachable_prometheus_raises_and_is_never_zero():
    class Down(FakePrometheus):
        def query_range(self, *args):
            raise MetricsError("Prometheus at http://prometheus.test unreachable: Connection refused")

    with pytest.raises(MetricsError, match="unreachable"):
        traffic_in_window(Down([]), M, 3, window_s=50, at=1000, step_s=10)


def test_the_step_grows_with_long_windows_and_the_window_is_whole_steps():
    prom = FakePrometheus([])
    traffic_in_window(prom, M, 3, window_s=7 * 86400, at=1_000_000)
    _, start, end, step = prom.queries[0]
    assert step == pytest.approx(7 * 86400 / 10_000) and end - start == pytest.approx(7 * 86400)
    first = len(prom.queries)
    traffic_in_window(prom, M, 3, window_s=2.5, at=1000)
    _, start, end, step = prom.queries[first]
    assert (start, end, step) == (997, 1000, 1.0)


def test_requests_that_reached_triton_without_the_versions_cluster_count_too():
    # The gateway never routed v3 (no cluster): its pinned path went through the pass-through.
    triton = [Series({"model": "llama", "version": "3"}, [(950, 40.0), (1000, 46.0)])]
    prom = FakePrometheus([], triton=triton)
    assert traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10) == 6
    assert 'model="llama",version="3"' in prom.queries[-1][0]
    prom = FakePrometheus([], triton=triton)
    traffic_in_window(prom, M, 3, window_s=50, at=1000, step_s=10, triton_model="llama_r3", triton_version=1)
    assert 'model="llama_r3",version="1"' in prom.queries[-1][0]


@pytest.mark.parametrize("window", [0, -5, float("nan"), True])
def test_a_bad_window_is_refused(window):
    with pytest.raises(SpecError) as err:
        traffic_in_window(FakePrometheus([]), M, 3, window_s=window)
    assert err.value.field == "window_s"


# -- retiring one version, with fakes (the live stack has the real thing) ------------------------------
class FakeRouter:
    def __init__(self, state: RoutingState | None, known: set[int]):
        self.state, self.known, self.calls = state, set(known), []

    def get_state(self, model):
        return self.state

    def known_versions(self, model):
        return set(self.known)

    def forget(self, model, version):
        self.calls.append(("forget", model, version))
        self.known.discard(version)
        return self.state


class FakeServed(ModelPerRelease):
    def __init__(self, ready: list[int]):
        super().__init__(triton=None)
        self.ready, self.calls = list(ready), []

    def ready_versions(self, model):
        return list(self.ready)

    def unload(self, model, version):
        self.calls.append(("unload", model, version))
        self.ready.remove(version)
        return list(self.ready)


class DeletingStore:
    def __init__(self):
        self.deleted = []

    def describe(self):
        return "oci://registry/llm-release"

    def delete_version(self, model, version):
        self.deleted.append((model, version))


def test_retire_refuses_before_any_change_and_otherwise_goes_in_order(tmp_path):
    idle = FakePrometheus([])
    router, served, store = FakeRouter(RoutingState(M, {2: 100}), {2, 3}), FakeServed([2, 3]), DeletingStore()
    (tmp_path / "llama_r3" / "1").mkdir(parents=True)  # model_per_release: release 3 is llama_r3, version 1
    (tmp_path / "llama_r2" / "1").mkdir(parents=True)

    with pytest.raises(RetirementRefused, match="stable"):
        retire_version(M, 2, router=router, served=served, model_repository=tmp_path, prometheus=idle,
                       window_s=60, store=store)
    now = time.time()
    busy = FakePrometheus([counter("llama_v3_shadow", {now - 3000: 0, now - 1000: 42, now - 10: 42})])
    with pytest.raises(RetirementRefused, match=r"llama v3 took 42 requests in the last 3600 s") as err:
        retire_version(M, 3, router=router, served=served, model_repository=tmp_path, prometheus=busy,
                       window_s=3600, store=store)
    assert err.value.permanent
    assert router.calls == [] and served.calls == [] and store.deleted == []

    result = retire_version(M, 3, router=router, served=served, model_repository=tmp_path, prometheus=idle,
                            window_s=60, store=store)
    assert router.calls == [("forget", M, 3)] and served.calls == [("unload", M, 3)]
    assert store.deleted == [(M, 3)]
    assert not (tmp_path / "llama_r3" / "1").exists() and (tmp_path / "llama_r2" / "1").exists()
    assert [step.split(":")[0] for step in result.steps] == ["traffic", "gateway", "triton", "model repository",
                                                             "artifact store"]
    assert result.steps[-1] == "artifact store: deleted from oci://registry/llm-release"
