"""Airflow-free core of the LLM release system."""
