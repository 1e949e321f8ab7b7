"""The exception tree of mcp-reconcile.

    McpReconcileError
      ManifestError(file, doc_index, json_path, reason)   bad input: YAML, schema, names, cycles, ${VAR}
      PrerequisiteError(server, missing, hint)            node/npm/uv/python or a required variable missing
      ActionError(server, action, reason)
        TransientError(delay_s)                           worth retrying with backoff (network, 5xx, timeout)
        PermanentError                                    retrying cannot help (package or version not found)
      StoreError                                          lock held by another controller, corrupt state file
      ProbeError(server, code)                            an MCP health probe failed

`str()` of every error is the one human line; the fields are there for events. Secret values never
enter either: callers pass names, never values.
"""

from __future__ import annotations


class McpReconcileError(Exception):
    """Base of every error this tool reports to a user (never shown as a traceback)."""


class ManifestError(McpReconcileError):
    """A manifest (or foreign config) that cannot be used, located as precisely as we can."""

    def __init__(self, reason: str, *, file: str | None = None, doc_index: int | None = None,
                 json_path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.doc_index = doc_index
        self.json_path = json_path
        self.line = line
        super().__init__(self.__str__())

    def located(self, *, file: str | None = None, doc_index: int | None = None) -> ManifestError:
        """The same problem with the file and document the validator could not know."""
        return ManifestError(self.reason, file=file if file is not None else self.file,
                             doc_index=doc_index if doc_index is not None else self.doc_index,
                             json_path=self.json_path, line=self.line)

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.doc_index is not None:
            where += f"[{self.doc_index}]"
        if self.line is not None:
            where += f":{self.line}"
        if self.json_path:
            return f"{where} {self.json_path}: {self.reason}"
        return f"{where}: {self.reason}"


class PrerequisiteError(McpReconcileError):
    """Something a server needs on the host is missing; `hint` says how to get it."""

    def __init__(self, server: str, missing: str, hint: str) -> None:
        self.server, self.missing, self.hint = server, missing, hint
        super().__init__(f"{server}: {missing}: {hint}")


class ActionError(McpReconcileError):
    """An action on one server failed."""

    def __init__(self, server: str, action: str, reason: str) -> None:
        self.server, self.action, self.reason = server, action, reason
        super().__init__(f"{server}: {action} failed: {reason}")


class TransientError(ActionError):
    """Retry later: the cause may go away (network, registry 5xx, timeout)."""

    def __init__(self, server: str, action: str, reason: str, *, delay_s: float | None = None) -> None:
        self.delay_s = delay_s
        super().__init__(server, action, reason)


class PermanentError(ActionError):
    """Do not retry until the spec changes (package or version not found, bad command)."""


class StoreError(McpReconcileError):
    """The state directory cannot be used: locked by another controller, or corrupt."""


class ProbeError(McpReconcileError):
    """An MCP probe got no good answer in time."""

    def __init__(self, server: str, reason: str, *, code: int | None = None) -> None:
        self.server, self.reason, self.code = server, reason, code
        super().__init__(f"{server}: probe failed: {reason}")
