"""Domain services: the only code that changes rows and emits events."""
