"""Serving operations: the embedded tritonserver, zero-downtime updates, the stub watchdog, tuning."""
