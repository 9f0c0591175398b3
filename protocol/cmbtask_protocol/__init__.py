"""cmbtask's one wire schema: events, commands, runner frames, REST bodies.

Every other component imports its message shapes from here and from nowhere
else, so that gateway, runner, operator and UI cannot drift apart.
"""

from . import (
    accounts,
    api,
    client,
    crd,
    crd_approvals,
    engines,
    events,
    jsontypes,
    modes,
    phases,
    process,
    retries,
    runner,
)
from .accounts import *  # noqa: F403
from .api import *  # noqa: F403
from .client import *  # noqa: F403
from .crd import *  # noqa: F403
from .crd_approvals import *  # noqa: F403
from .engines import *  # noqa: F403
from .events import *  # noqa: F403
from .jsontypes import *  # noqa: F403
from .modes import *  # noqa: F403
from .phases import *  # noqa: F403
from .process import *  # noqa: F403
from .retries import *  # noqa: F403
from .runner import *  # noqa: F403

__all__ = [
    *accounts.__all__,
    *api.__all__,
    *client.__all__,
    *crd.__all__,
    *crd_approvals.__all__,
    *engines.__all__,
    *events.__all__,
    *jsontypes.__all__,
    *modes.__all__,
    *phases.__all__,
    *process.__all__,
    *retries.__all__,
    *runner.__all__,
]
