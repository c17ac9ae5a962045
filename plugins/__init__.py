"""The AirflowPlugin of llm_release."""
