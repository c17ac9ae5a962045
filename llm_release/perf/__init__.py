"""The perf bench: streaming load per engine version (`bench`) and the candidate-vs-stable
verdict with its report (`report`). See docs/quality.md."""

from llm_release.perf.bench import (  # noqa: F401
    DEFAULT_CONCURRENCIES,
    DEFAULT_MIX,
    BenchResult,
    BenchTarget,
    LevelStats,
    MixEntry,
    bench_pair,
    parse_mix,
    percentile,
    run_bench,
    summarize,
)
from llm_release.perf.report import (  # noqa: F401
    DEFAULT_GATES,
    BenchVerdict,
    Check,
    compare,
    parse_gates,
    render_svg,
    write_bench_report,
)
