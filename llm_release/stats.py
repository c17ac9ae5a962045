"""Small exact statistics used to judge traffic splits (no SciPy needed)."""

from __future__ import annotations

import math


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_interval(n: int, p: float, confidence: float = 0.99) -> tuple[int, int]:
    """Central interval [lo, hi] of Binomial(n, p) holding at least `confidence` of the mass.

    A measured count outside it means the split is not the configured one (or we were
    unlucky with probability < 1 - confidence).
    """
    if n < 0 or not 0 <= p <= 1 or not 0 < confidence < 1:
        raise ValueError("need n >= 0, 0 <= p <= 1 and 0 < confidence < 1")
    if p in (0.0, 1.0):
        k = int(round(n * p))
        return k, k
    tail = (1 - confidence) / 2
    pmf = [math.exp(_log_pmf(k, n, p)) for k in range(n + 1)]
    lo, acc = 0, 0.0
    while lo < n and acc + pmf[lo] <= tail:
        acc += pmf[lo]
        lo += 1
    hi, acc = n, 0.0
    while hi > 0 and acc + pmf[hi] <= tail:
        acc += pmf[hi]
        hi -= 1
    return lo, hi
