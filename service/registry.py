"""The model versions this process serves, and which one answers a request.

Routes ask `resolve(name, version)`: an unversioned request goes to the newest
served version; an unknown model or version is a `NotFound` naming what is
served. Knows nothing of HTTP.
"""

from __future__ import annotations

from service.errors import NotFound
from service.predictor import Predictor


class ModelRegistry:
    def __init__(self, name: str) -> None:
        self.name = name
        self._versions: dict[int, Predictor] = {}
        self._newest: Predictor | None = None

    def add(self, predictor: Predictor) -> None:
        self._versions[predictor.model.version] = predictor
        self._newest = self._versions[max(self._versions)]

    def served(self) -> list[Predictor]:
        """Every served version, oldest first."""
        return [self._versions[v] for v in sorted(self._versions)]

    @property
    def ready(self) -> bool:
        return self._newest is not None

    def resolve(self, name: str | None = None, version: str | int | None = None) -> Predictor:
        """The predictor for `name` (default: this model) at `version` (default: newest)."""
        if name is not None and name != self.name:
            raise NotFound(f"model '{name}' not found; this server serves '{self.name}'")
        if version is None or version == "":
            if self._newest is None:
                raise NotFound(f"model '{self.name}' has no version loaded yet")
            return self._newest
        try:
            predictor = self._versions.get(int(version))
        except ValueError:
            predictor = None
        if predictor is None:
            served = ", ".join(str(v) for v in sorted(self._versions)) or "none"
            raise NotFound(
                f"model '{self.name}' version '{version}' not found; served versions: {served}"
            )
        return predictor
