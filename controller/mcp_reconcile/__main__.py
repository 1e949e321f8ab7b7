from mcp_reconcile.cli import main

raise SystemExit(main())
