"""``python -m mserve`` runs the CLI."""

from mserve.cli.main import main

raise SystemExit(main())
