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
