"""Execution environments: conda specs solved, installed and packed per model version; the offline channel."""
