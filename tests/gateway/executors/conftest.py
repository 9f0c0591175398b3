"""The local executor's tests run real runners against the runner tests' fake gateway."""

from tests.runner.conftest import _no_leftover_runners, gw

__all__ = ["_no_leftover_runners", "gw"]
