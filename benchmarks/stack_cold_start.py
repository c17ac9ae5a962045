"""Cold start of the local stack: `up` until every component answers its health check, then `down`."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402

from llm_release.stack.local import LocalStack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ups, downs = [], []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            stack = LocalStack(Path(tmp) / "stack")
            started = time.perf_counter()
            stack.up()
            ups.append(time.perf_counter() - started)
            started = time.perf_counter()
            stack.down()
            downs.append(time.perf_counter() - started)
        print(f"run {run + 1}: up {ups[-1]:.2f} s, down {downs[-1]:.2f} s")
    write_results("stack_cold_start", {
        "runs": args.runs,
        "up_s": {"median": round(statistics.median(ups), 3), "min": round(min(ups), 3), "max": round(max(ups), 3)},
        "down_s": {"median": round(statistics.median(downs), 3), "min": round(min(downs), 3), "max": round(max(downs), 3)},
    })


if __name__ == "__main__":
    main()
