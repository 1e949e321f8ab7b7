"""mcp-reconcile: a declarative reconciliation controller for MCP servers."""

__version__ = "0.1.0"
