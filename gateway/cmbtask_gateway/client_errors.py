"""What the shell client's commands exit with, in one place.

======  ==================================================================
code    meaning
======  ==================================================================
0       done
1       the gateway refused the request (not found, invalid, over a limit)
        or could not be reached
2       bad command line (argparse)
3       the token was refused (401/403)
4       a conflict: the approval is already resolved, the task already over
130     interrupted (Ctrl-C)
======  ==================================================================
"""

from __future__ import annotations

__all__ = ["EXIT_AUTH", "EXIT_CONFLICT", "EXIT_ERROR", "EXIT_OK", "ApiError"]

EXIT_OK, EXIT_ERROR, EXIT_AUTH, EXIT_CONFLICT = 0, 1, 3, 4


class ApiError(RuntimeError):
    """A request the gateway answered with an error status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code

    @property
    def exit_code(self) -> int:
        return {401: EXIT_AUTH, 403: EXIT_AUTH, 409: EXIT_CONFLICT}.get(self.status_code, EXIT_ERROR)
