"""``python -m cmbtask_operator``: run the operator."""

from .main import main

raise SystemExit(main())
