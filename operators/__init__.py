"""Airflow operators of llm_release: thin wrappers around the core."""
