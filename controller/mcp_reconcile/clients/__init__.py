"""Connecting agents: entries for mcp-reconcile's servers in client config files (SPEC "Connecting agents").

    catalog.py    the known clients: paths per OS and scope, format, entry shapes, with their sources
    jsonedit.py   in-place member edits of JSON / JSONC text (comments and layout kept)
    documents.py  one config file as named entries, per format (JSON(C), TOML via tomlkit, YAML via ruamel)
    record.py     STATE/clients.json: which entries mcp-reconcile wrote (file, name, fingerprint)
    writer.py     desired entries -> FileChange (pure) -> atomic, backed-up write
    command.py    `mcp-reconcile clients list | write | remove`

The pure API below is what a declarative `MCPClient` kind plans and applies with:

    entries = desired_entries(CLIENTS["cursor"], "user", [Target("time", url, token_env)], connect=Connect(exe, dir))
    change = plan_write(client, scope, client.path(scope, Where.here()), entries, Record(state), prune=True)
    change.diff(); change.entries; change.conflicts      # what plan shows
    apply(change, record)                                # what apply does
    remove(plan_remove(client, scope, path, None, record), record)
"""

from mcp_reconcile.clients.catalog import CLIENTS, PROJECT, USER, Client, Connect, Entry, Target, Where
from mcp_reconcile.clients.record import Record
from mcp_reconcile.clients.writer import (
    ClientConfigError,
    EntryChange,
    FileChange,
    apply,
    desired_entries,
    plan_remove,
    plan_write,
    remove,
)

__all__ = ["CLIENTS", "PROJECT", "USER", "Client", "ClientConfigError", "Connect", "Entry", "EntryChange",
           "FileChange", "Record", "Target", "Where", "apply", "desired_entries", "plan_remove", "plan_write",
           "remove"]
