"""Metric sensors and their deferrable triggers (canary gates) live here."""
