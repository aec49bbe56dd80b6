"""Benchmarks of tritongen's ensembles against the article's serving designs (bench/README.md;
the article: docs/benchmarks.md)."""
