"""Benchmarks of tritongen's ensembles against the article's serving designs (see README.md)."""
