"""The command line: errors are one clear line naming the field, and nothing is written."""

import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "llm_release.cli", *args], capture_output=True, text=True, timeout=120)


def test_engine_build_with_bad_precision_names_the_field_and_writes_nothing(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert run("checkpoint", "--out", str(ckpt), "--seed", "1").returncode == 0
    out = run("engine", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "engine"),
              "--model", "m", "--version", "1", "--precision", "fp7")
    assert out.returncode == 2
    assert out.stderr.startswith("error: precision:")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "engine").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_engine_build_with_zero_batch_size_names_the_field(tmp_path):
    ckpt = tmp_path / "ckpt"
    run("checkpoint", "--out", str(ckpt))
    out = run("engine", "build", "--checkpoint", str(ckpt), "--out", str(tmp_path / "engine"),
              "--model", "m", "--version", "1", "--max-batch-size", "0")
    assert out.returncode == 2
    assert "max_batch_size" in out.stderr
    assert not (tmp_path / "engine").exists()


def test_status_of_a_stack_that_is_not_there(tmp_path):
    out = run("stack", "status", "--state-dir", str(tmp_path / "none"))
    assert out.returncode == 3
    assert "no stack" in out.stdout


def test_analyze_refuses_bad_arguments_naming_them(tmp_path):
    base = ["analyze", "--model", "m", "--candidate", "2", "--baseline", "1", "--prometheus", "http://127.0.0.1:1"]
    out = run(*base, "--disable", "gpu_headroom")
    assert out.returncode == 2 and out.stderr.startswith("error: --disable:") and "Traceback" not in out.stderr
    out = run(*base, "--since", "yesterday-ish")
    assert out.returncode == 2 and out.stderr.startswith("error: --since:")
    out = run("analyze", "--model", "m", "--candidate", "1", "--baseline", "1", "--prometheus", "http://127.0.0.1:1")
    assert out.returncode == 2 and out.stderr.startswith("error: candidate:")
    settings = tmp_path / "analysis.json"
    settings.write_text('{"alpha": 2}')
    out = run(*base, "--config", str(settings))
    assert out.returncode == 2 and out.stderr.startswith("error: analysis.alpha:")


def test_analyze_with_prometheus_unreachable_is_inconclusive_never_pass():
    out = run("analyze", "--model", "m", "--candidate", "2", "--baseline", "1", "--prometheus", "http://127.0.0.1:1",
              "--since", "30s", "--step", "5", "--json")
    assert out.returncode == 3, out.stdout + out.stderr
    import json

    verdict = json.loads(out.stdout)
    assert verdict["outcome"] == "INCONCLUSIVE" and "Prometheus" in verdict["reason"]


def test_history_prints_each_release_with_its_timeline_newest_first(tmp_path):
    import json
    import os

    from llm_release.records import ReleaseRecords

    state_dir = tmp_path / "stack"
    url = ReleaseRecords.sqlite_url(state_dir / "records" / "releases.db")
    with ReleaseRecords(url) as records:
        first = records.create_release(model="llama", version=2, environment="staging", region="us-east-1",
                                       strategy="canary", spec={}, baseline_version=1, requested_by="alice",
                                       dag_id="release_canary", run_id="manual__1")
        records.transition(first.id, expected="pending", to="canary", message="canary at 10%",
                           data={"weights": {"1": 90, "2": 10}})
        records.add_event(first.id, "verdict", "PASS: p99 812 ms vs 790 ms", data={"outcome": "PASS"})
        records.finish(first.id, state="promoted", outcome="promoted", reason="every step passed")
        second = records.create_release(model="llama", version=3, environment="prod", region="eu-west-1",
                                        strategy="blue_green", spec={}, requested_by="carol")
        records.create_release(model="mistral", version=1, environment="prod", region="eu-west-1",
                               strategy="canary", spec={})

    out = run("history", "--model", "llama", "--records", url)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.index(f"#{second.id}  llama v3") < text.index(f"#{first.id}  llama v2 (baseline v1)")
    assert "staging/us-east-1  canary  promoted" in text and "prod/eu-west-1  blue_green  pending (running)" in text
    assert "by alice" in text and "took " in text and "reason: every step passed" in text
    timeline = [line.split()[1] for line in text.splitlines() if line.startswith("      ")]
    assert timeline == ["created", "created", "transition", "verdict", "finished"]
    assert "pending -> canary" in text and "canary at 10%" in text and "mistral" not in text

    # The local stack's records are the default: --state-dir finds the same file.
    out = run("history", "--model", "llama", "--env", "staging", "--json", "--state-dir", str(state_dir))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [r["id"] for r in doc] == [first.id] and doc[0]["outcome"] == "promoted"
    assert [e["kind"] for e in doc[0]["events"]] == ["created", "transition", "verdict", "finished"]
    assert doc[0]["events"][1]["data"] == {"weights": {"1": 90, "2": 10}}

    env = {**os.environ, "LLM_RELEASE_RECORDS_URL": url}
    out = subprocess.run([sys.executable, "-m", "llm_release.cli", "history", "--model", "mistral", "--limit", "5"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and "mistral v1" in out.stdout

    out = run("history", "--model", "gemma", "--records", url)
    assert out.returncode == 0 and out.stdout.startswith("no releases of gemma")
    out = run("history", "--model", "llama", "--state-dir", str(tmp_path / "elsewhere"))
    assert out.returncode == 0 and "no releases of llama" in out.stdout
    assert not (tmp_path / "elsewhere").exists()
