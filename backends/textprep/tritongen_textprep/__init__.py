"""Tokenization for Triton preprocessing models; one version of it is pinned per model version."""

__version__ = "1.0.0"
