"""Watching models in production: metrics (and, later, drift, data quality, feedback, alerts)."""
