"""User-facing errors: one line that names what is wrong and what is expected."""

from __future__ import annotations


class MeshlabError(Exception):
    """An error the CLI prints as a single line (no traceback) and exits with status 2."""

    @property
    def lines(self) -> list[str]:
        return [" ".join(str(self).split())]


class RefusedError(MeshlabError):
    """Several independent refusals (e.g. the cloud preflight's): one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self._lines = [" ".join(line.split()) for line in lines]

    @property
    def lines(self) -> list[str]:
        return self._lines
