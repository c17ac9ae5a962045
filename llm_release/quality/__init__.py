"""Release quality gates that read what a model says: golden prompts (`golden`).

A candidate engine is published only when its answers to a fixed suite of prompts meet their
expectations and do not drift too far from the stable version's answers; the perf bench
(llm_release.perf) is the other half of that decision.
"""

from llm_release.quality.golden import (  # noqa: F401
    CaseResult,
    Expectation,
    GoldenCase,
    GoldenReport,
    GoldenSuite,
    Regression,
    default_suite_path,
    load_suite,
    model_per_release,
    parse_suite,
    pinned_generator,
    pinned_model,
    run_suite,
    write_report,
)
