"""The Runner protocol shared by every backend."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """A backend that maps named numpy inputs to named numpy outputs.

    ``activate()`` loads what is expensive (sessions, engines); ``infer`` runs one batch; ``deactivate()``
    frees it. Runners are context managers: ``with runner: runner.infer(feed)``.
    """

    name: str

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def activate(self) -> None: ...

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class RunnerBase:
    """Context-manager plumbing for concrete runners."""

    name = "runner"

    def activate(self) -> None:
        """Load resources (default: nothing)."""

    def deactivate(self) -> None:
        """Free resources (default: nothing)."""

    def __enter__(self) -> RunnerBase:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
