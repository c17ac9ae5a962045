"""Airflow hooks of llm_release: connections -> core clients."""
