"""Why a process is not ready, as its components see it. The composition root adds
one check per component; /readyz answers 503 with every reason a check gives."""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[], str | None]  # a reason the process is not ready, or None


class Readiness:
    def __init__(self) -> None:
        self._checks: list[Check] = []

    def add(self, check: Check) -> None:
        self._checks.append(check)

    def problems(self) -> list[str]:
        return [reason for check in self._checks if (reason := check()) is not None]
