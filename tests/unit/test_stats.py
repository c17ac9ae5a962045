import random

import pytest

from llm_release.stats import binomial_interval


def test_interval_matches_known_quantiles():
    # Binomial(2000, 0.1): mean 200, sd 13.4; the central 99% is about 166..235.
    lo, hi = binomial_interval(2000, 0.1, 0.99)
    assert 163 <= lo <= 168 and 232 <= hi <= 237


def test_interval_covers_the_promised_share_of_simulated_draws():
    rng = random.Random(7)
    lo, hi = binomial_interval(200, 0.3, 0.9)
    inside = sum(lo <= sum(rng.random() < 0.3 for _ in range(200)) <= hi for _ in range(2000))
    assert 0.88 <= inside / 2000 <= 0.97


def test_degenerate_and_bad_inputs():
    assert binomial_interval(50, 0.0) == (0, 0)
    assert binomial_interval(50, 1.0) == (50, 50)
    with pytest.raises(ValueError):
        binomial_interval(10, 1.5)
