"""Canary analysis: three-outcome gates and a sequential canary-versus-baseline judge.

Pure and Airflow-free: the judge is fed counts interval by interval (from Prometheus in
production, from a simulator in tests and benchmarks) and answers PASS, FAIL or INCONCLUSIVE
with the numbers behind it.
"""
