"""What every deploy output is: a renderer of repository-relative files from the plan."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from generator.pipeline.plan import RepositoryPlan


class DeployOutput(ABC):
    """One kind of deploy file(s) (subclasses are stateless singletons)."""

    name: ClassVar[str]
    """The output's name in DEPLOY_OUTPUTS."""

    @abstractmethod
    def render(self, plan: RepositoryPlan, repository_files: Mapping[str, str]) -> dict[str, str]:
        """Repository-relative path -> text of the output's files for `plan`; `repository_files`
        are the repository's other generated files (path -> text)."""
