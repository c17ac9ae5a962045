"""The targeted mutations benchmarks/mutation.py runs: plausible bugs in the modules that guard
data and traffic, each with the tests that should catch it.

A mutation is an exact replacement of one snippet (which must occur once in its file). Add one
for every guard worth keeping: a check skipped, a comparison inverted, a step left out, a
verification that trusts what was written instead of reading back.
"""

from __future__ import annotations

from dataclasses import dataclass

IT = "tests/integration/"
UNIT = "tests/unit/"


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    old: str
    new: str
    why: str  # the harm if this bug shipped
    tests: tuple[str, ...]

    def describe(self) -> dict:
        module = self.file.removeprefix("llm_release/").removesuffix(".py").replace("/", ".")
        return {"id": self.id, "module": module, "file": self.file, "why": self.why, "tests": list(self.tests)}


S3_SYNC = IT + "test_s3_publish_sync.py"
ARTIFACTORY = IT + "test_artifactory_store.py"

MUTATIONS: list[Mutation] = [
    # -- artifacts: publish, stores, sync ------------------------------------------------------
    Mutation("artifacts.sync.misplaced_manifest", "llm_release/artifacts/sync.py",
             "    if (manifest.model, manifest.version) != (model, version):", "    if False:",
             "a manifest stored under another version is installed under the path's name", (S3_SYNC,)),
    Mutation("artifacts.sync.retention_keeps_dirs", "llm_release/artifacts/sync.py",
             "                remove_version(repo_root, action.model, action.version)", "                pass",
             "retired versions stay on disk (reported removed)", (S3_SYNC,)),
    Mutation("artifacts.sync.no_listing_recheck", "llm_release/artifacts/sync.py",
             "            hashlib.new(remote.checksum_algorithm, data).hexdigest() != remote.manifest_checksum:",
             "            False:", "a manifest changed after the listing is installed unnoticed",
             (S3_SYNC, IT + "test_sync_crash_consistency.py")),
    Mutation("artifacts.sync.no_legacy_fallback", "llm_release/artifacts/sync.py",
             "                name = ARCHIVE_FILE\n", "                raise\n",
             "versions published before digest-named archives no longer sync", (S3_SYNC,)),
    Mutation("artifacts.publish.shared_archive_name", "llm_release/artifacts/publish.py",
             "                             name=manifest.archive_object)", "                             )",
             "racing publishers overwrite each other's archive: a published version that cannot install",
             (S3_SYNC,)),
    Mutation("artifacts.publish.no_immutability_check", "llm_release/artifacts/publish.py",
             "        if existing != data:", "        if False:",
             "a published version is silently 'republished' with other bytes", (S3_SYNC,)),
    Mutation("artifacts.s3.unconditional_manifest", "llm_release/artifacts/stores/s3.py",
             'IfNoneMatch="*",', "",
             "two racing publishers both win; the later manifest replaces the earlier", (S3_SYNC,)),
    Mutation("artifacts.artifactory.trusts_deploy", "llm_release/artifacts/stores/artifactory.py",
             '        if str(stored.get("sha256", "")).lower() != checksums["sha256"]:', "        if False:",
             "bytes damaged in transit are accepted under the server checksum policy", (ARTIFACTORY,)),
    Mutation("artifacts.artifactory.unverified_redirect", "llm_release/artifacts/stores/artifactory.py",
             "        if not expected:\n            # A download redirected", "        if False:\n            # A download redirected",
             "redirected downloads are installed unverified", (ARTIFACTORY,)),
    Mutation("artifacts.artifactory.race_as_auth_error", "llm_release/artifacts/stores/artifactory.py",
             "        except (ArtifactAuthError, ArtifactNotFound):", "        except ZeroDivisionError:",
             "a lost publish race reads as a credentials problem", (ARTIFACTORY,)),
    # -- routing ---------------------------------------------------------------------------------
    Mutation("routing.envoy.no_readback", "llm_release/routing/envoy.py",
             "        if applied != state:\n            raise RoutingError(", "        if False:\n            raise RoutingError(",
             "a change Envoy does not serve is reported done", (IT + "test_gateway_routing.py",)),
    Mutation("routing.envoy.forget_with_traffic", "llm_release/routing/envoy.py",
             "                if routing is not None and version in routing.versions:", "                if False:",
             "a version still receiving traffic loses its clusters (503s)", (IT + "test_gateway_forget.py",)),
    Mutation("routing.envoy.dotted_stats", "llm_release/routing/envoy.py",
             '    return model.replace(".", "~")', "    return model",
             "a dotted model's traffic is counted under another name: the judge never sees it",
             (UNIT + "test_envoy_route_config.py", IT + "test_prometheus_metrics.py")),
    Mutation("routing.envoy.split_not_cumulative", "llm_release/routing/envoy.py",
             "        cumulative += weight", "        cumulative = weight",
             "a 70/20/10 split serves other shares", (UNIT + "test_envoy_route_config.py",)),
    Mutation("routing.shift.no_probe", "llm_release/routing/shift.py",
             "            triton.probe(state.model, version)", "            pass",
             "a READY version that fails inference gets traffic", (IT + "test_traffic_shifting.py",)),
    Mutation("routing.shift.no_ready_check", "llm_release/routing/shift.py",
             "    if missing:\n        raise SpecError(\"weights\"", "    if False:\n        raise SpecError(\"weights\"",
             "traffic goes to a version Triton does not serve", (IT + "test_serving_topologies.py",)),
    # -- Triton, model repository, serving -------------------------------------------------------
    Mutation("triton_control.probe_any_version", "llm_release/triton_control.py",
             "        if served != str(version):", "        if False:",
             "a probe answered by another version passes", (IT + "test_triton_control.py",)),
    Mutation("model_repo.no_staged_verification", "llm_release/model_repo.py",
             "            if expected is not None and not meta.same_build(expected):", "            if False:",
             "an install whose files differ from the published engine is made visible",
             (S3_SYNC, UNIT + "test_model_repo.py")),
    Mutation("model_repo.remove_keeps_dir", "llm_release/model_repo.py",
             "        os.rename(target, doomed)\n        fsync_dir(model_dir)\n        shutil.rmtree(doomed)",
             "        return",
             "a removed version stays visible to Triton", (S3_SYNC,)),
    Mutation("serving.release_name", "llm_release/serving.py",
             '        return f"{model}{self.suffix}{version}"', '        return f"{model}{self.suffix}{version + 1}"',
             "the model-per-release topology loads and routes the wrong release", (IT + "test_serving_topologies.py",)),
    # -- metrics ---------------------------------------------------------------------------------
    Mutation("metrics.counter_reset_negative", "llm_release/metrics/prometheus.py",
             "            total += value - previous if value >= previous else value",
             "            total += value - previous",
             "a restarted Envoy reads as negative traffic", (UNIT + "test_prometheus_counters.py",)),
    Mutation("metrics.new_series_not_counted", "llm_release/metrics/prometheus.py",
             "    previous = 0.0 if from_zero else None", "    previous = None",
             "errors of a version added inside the window are not counted", (UNIT + "test_prometheus_counters.py",)),
]
