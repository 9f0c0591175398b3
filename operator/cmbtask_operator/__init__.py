"""cmbtask operator: kopf handlers turning CmbTask objects into runner pods.

``run()`` starts it (``python -m cmbtask_operator``); ``build_pod`` and the
status functions are pure and importable without a cluster.
"""

from .main import run, run_async
from .pods import PodInput, build_pod, pod_name
from .settings import OperatorSettings
from .statuses import PodReport, read_pod, status_patch

__all__ = [
    "OperatorSettings",
    "PodInput",
    "PodReport",
    "build_pod",
    "pod_name",
    "read_pod",
    "run",
    "run_async",
    "status_patch",
]
