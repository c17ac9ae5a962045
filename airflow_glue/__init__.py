"""Airflow glue for llm_release: hooks, operators, sensors and the plugin (thin layers over the core)."""
