"""The ``cmbagent`` engine (optional extra): real CMBAgent workflows in the runner."""

from .engine import CmbAgentEngine

__all__ = ["CmbAgentEngine"]
