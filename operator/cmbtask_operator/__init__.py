"""cmbtask operator: kopf handlers turning CmbTask objects into runner pods."""
