"""Triton version control on the real server: load beside, idempotence, clear errors."""

from __future__ import annotations

import pytest

from llm_release.errors import SpecError, TritonError

MODEL = "reference_lm"


def test_load_is_idempotent_and_keeps_both_versions(triton, loaded):
    assert triton.ready_versions(MODEL) == [1, 2]
    assert triton.load_versions(MODEL, [2, 1]) == [1, 2]
    assert triton.ready_versions(MODEL) == [1, 2]


def test_probe_checks_the_answering_version(stack, triton, loaded):
    """A misrouting front (a gateway or proxy sending version 2's requests to version 1) is
    caught: the answer names the version that produced it, and the probe compares."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    from llm_release.triton_control import TritonControl

    upstream = stack["components"]["triton"]["url"]

    class Misrouting(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            resp = requests.post(upstream + self.path.replace("/versions/2/", "/versions/1/"), data=body,
                                 headers={"Content-Type": "application/json"}, timeout=30)
            self.send_response(resp.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(resp.content)))
            self.end_headers()
            self.wfile.write(resp.content)

        do_GET = do_POST

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Misrouting)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for version in (1, 2):  # straight to Triton: each version answers for itself
            probe = triton.probe(MODEL, version)
            assert probe.version == version and probe.text
        behind = TritonControl(f"http://127.0.0.1:{proxy.server_address[1]}")
        assert behind.probe(MODEL, 1).version == 1
        with pytest.raises(TritonError, match="v2 was answered by version '1'"):
            behind.probe(MODEL, 2)
    finally:
        proxy.shutdown()


def test_missing_version_directory_is_a_clear_error_and_serving_versions_stay(triton, loaded):
    with pytest.raises(TritonError) as err:
        triton.load_versions(MODEL, [1, 2, 9])
    assert "no version directory for [9]" in str(err.value)
    assert triton.ready_versions(MODEL) == [1, 2]


def test_version_triton_skips_is_reported_quickly_when_the_repository_is_not_readable(stack, loaded):
    """Without a readable repository Triton answers 200 and skips the missing version: we notice."""
    import time

    from llm_release.triton_control import TritonControl

    remote = TritonControl(stack["components"]["triton"]["url"])  # no model_repository: like a PVC we cannot see
    started = time.monotonic()
    with pytest.raises(TritonError) as err:
        remote.load_versions(MODEL, [1, 2, 9])
    assert time.monotonic() - started < 30
    assert "v9" in str(err.value)
    assert remote.ready_versions(MODEL) == [1, 2]


@pytest.mark.parametrize("versions", [[0], [-1], ["two"], []])
def test_bad_versions_are_refused_before_calling_triton(triton, versions):
    with pytest.raises(SpecError) as err:
        triton.load_versions(MODEL, versions)
    assert err.value.field == "versions"


def test_unloading_one_version_keeps_the_other_serving(triton, loaded):
    assert triton.unload_versions(MODEL, [2]) == [1]
    assert triton.ready_versions(MODEL) == [1]
    assert triton.probe(MODEL, 1).version == 1
    assert triton.load_versions(MODEL, [1, 2]) == [1, 2]


def test_unloading_the_last_version_waits_until_triton_reports_it_unloaded(triton, engines, stack):
    from llm_release.model_repo import install_version

    install_version(engines["dir"] / "engine1", stack["model_repository"], model_name="scratch_lm", version=1)
    triton.load_versions("scratch_lm", [1])
    assert triton.unload_versions("scratch_lm", [1]) == []
    assert {state for state, _ in triton.version_states("scratch_lm").values()} == {"UNAVAILABLE"}


def test_a_failing_load_reports_tritons_message_and_keeps_nothing_half_loaded(triton, stack):
    from pathlib import Path

    model_dir = Path(stack["model_repository"]) / "broken_lm"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "text_input" data_type: TYPE_STRING dims: [1] }]\n'
        'output [{ name: "text_output" data_type: TYPE_STRING dims: [1] }]\n')
    (model_dir / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('engine file is corrupt: rank0.engine')\n")
    with pytest.raises(TritonError) as err:
        triton.load_versions("broken_lm", [1])
    assert "engine file is corrupt" in str(err.value)
    assert triton.ready_versions("broken_lm") == []


def test_waiting_for_ready_has_a_deadline_with_the_state_in_the_message(triton, loaded):
    with pytest.raises(TritonError) as err:
        triton.wait_ready(MODEL, [1, 2, 5], timeout_s=0.5)
    assert "v5" in str(err.value) and "not READY after" in str(err.value)
