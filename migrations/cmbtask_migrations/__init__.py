"""Alembic environment and revisions for the gateway's database."""

from pathlib import Path

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)

# PostgreSQL advisory lock that serialises schema upgrades: two gateway
# replicas (or their init containers) starting on an empty database would
# otherwise both try to create the tables and one would fail.
# The value is arbitrary but fixed: every cmbtask version must use the same.
MIGRATION_LOCK_ID = 0x636D6274  # "cmbt"
