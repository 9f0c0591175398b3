"""cmbtask runner: one task in one isolated process, streaming to the gateway."""
