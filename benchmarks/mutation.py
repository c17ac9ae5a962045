"""Mutation testing of the modules that guard data and traffic: do the tests catch the bugs that matter?

Each mutation in benchmarks/mutations.py is one plausible bug (a check skipped, a comparison
inverted, a step left out), written as an exact replacement in one file, with the tests that
should catch it. The runner copies the repository to a scratch directory, applies one mutation
at a time there, runs those tests, and records whether they failed (the mutation is *killed*) or
passed (it *survived*). The checkout itself is never modified.

    python benchmarks/mutation.py                 # every mutation
    python benchmarks/mutation.py --only routing  # ids starting with "routing"
    python benchmarks/mutation.py --list

Writes benchmarks/results/mutation.json: per mutation the outcome, the failing test, seconds;
totals and the kill rate per module. On demand, not a CI gate: a full run takes tens of minutes
(the integration tests start the real stack).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402
from mutations import MUTATIONS, Mutation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def scratch_copy(dest: Path) -> None:
    """The tracked files of the checkout (as they are on disk), and links to its venvs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for venv in (".venv-xds",):  # the stack starts the control plane from <repo>/.venv-xds
        if (ROOT / venv).exists():
            (dest / venv).symlink_to((ROOT / venv).resolve())


def run_tests(workdir: Path, tests: tuple[str, ...], timeout_s: float) -> tuple[int, str, float]:
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=str(workdir))
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                             cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s)
        return out.returncode, out.stdout + out.stderr, time.monotonic() - started
    except subprocess.TimeoutExpired as exc:
        return -1, f"timed out after {timeout_s:.0f} s\n{exc.stdout or ''}", time.monotonic() - started


def apply(workdir: Path, mutation: Mutation) -> str:
    path = workdir / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.id}: the text to replace occurs {count} times in {mutation.file} (needs 1): "
                         "the code changed; update benchmarks/mutations.py")
    path.write_text(text.replace(mutation.old, mutation.new))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run the mutations whose id starts with this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if m.id.startswith(args.only)]
    if args.list:
        for m in chosen:
            print(f"{m.id:40s} {m.file}: {m.why}")
        return
    rows, baseline_failed = [], {}
    with tempfile.TemporaryDirectory(prefix="llm-release-mutation-") as tmp:
        workdir = Path(tmp)
        scratch_copy(workdir)
        for tests in sorted({m.tests for m in chosen}):
            rc, output, _ = run_tests(workdir, tests, args.timeout)
            if rc != 0:
                baseline_failed[tests] = output[-2000:]
                print(f"baseline fails for {tests}: its mutations are not judged", flush=True)
        for m in chosen:
            if m.tests in baseline_failed:
                rows.append({**m.describe(), "outcome": "not judged", "detail": "the tests fail without it"})
                continue
            original = apply(workdir, m)
            try:
                rc, output, seconds = run_tests(workdir, m.tests, args.timeout)
            finally:
                (workdir / m.file).write_text(original)
            outcome = "killed" if rc != 0 else "survived"
            failed = FAILED.findall(output)
            rows.append({**m.describe(), "outcome": outcome, "caught_by": failed[:3], "seconds": round(seconds, 1)})
            print(f"{outcome:9s} {m.id} ({seconds:.0f} s){' by ' + failed[0] if failed else ''}", flush=True)
    judged = [r for r in rows if r["outcome"] in ("killed", "survived")]
    modules: dict[str, dict] = {}
    for r in judged:
        entry = modules.setdefault(r["module"], {"mutations": 0, "killed": 0})
        entry["mutations"] += 1
        entry["killed"] += r["outcome"] == "killed"
    for entry in modules.values():
        entry["kill_rate"] = round(entry["killed"] / entry["mutations"], 3)
    killed = sum(r["outcome"] == "killed" for r in judged)
    figures = {"mutations": len(rows), "judged": len(judged), "killed": killed,
               "kill_rate": round(killed / len(judged), 3) if judged else None,
               "survivors": [r for r in judged if r["outcome"] == "survived"],
               "modules": modules, "results": rows}
    print(f"killed {killed} of {len(judged)} judged mutations "
          f"({100 * figures['kill_rate']:.1f}%)" if judged else "nothing judged")
    write_results("mutation" if not args.only else f"mutation_{args.only}", figures)


if __name__ == "__main__":
    main()
