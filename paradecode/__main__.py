"""``python -m paradecode ...`` runs the ``paradecode`` command (for checkouts that are not installed)."""

from .cli import main

raise SystemExit(main())
