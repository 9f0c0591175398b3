"""Alembic environment and revisions for the gateway's database."""

from pathlib import Path

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
