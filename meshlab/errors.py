"""User-facing errors: one line that names what is wrong and what is expected."""


class MeshlabError(Exception):
    """An error the CLI prints as a single line (no traceback) and exits with status 2."""
