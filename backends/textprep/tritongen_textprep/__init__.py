"""Tokenization for Triton preprocessing models; one version of it is pinned per model version."""

__version__ = "1.2.0"


def runs(made_with: str, installed: str = __version__) -> bool:
    """Whether a model made with package version `made_with` runs on `installed`: the same major
    version, no older (a minor version adds features and tokenizes what older ones did alike)."""
    made = tuple(int(part) for part in made_with.split("."))
    have = tuple(int(part) for part in installed.split("."))
    return made[0] == have[0] and have >= made
