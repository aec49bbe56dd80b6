"""Containers and deployment: the local Triton image and the generated deploy files."""
