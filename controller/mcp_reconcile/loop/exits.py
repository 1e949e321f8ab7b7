"""Process exit detection without polling: a pidfd per runner, watched by the event loop.

Works the same for runners we spawned and runners re-adopted after a controller restart (pidfd_open
takes any pid). The callback only names the server; the reconcile pass reads the exit record.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from mcp_reconcile import proc


class ExitWatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[str], None]) -> None:
        self._loop = loop
        self._on_exit = on_exit
        self._fds: dict[str, tuple[int, int]] = {}   # name -> (pid, fd)

    def watch(self, name: str, pid: int) -> bool:
        """Call on_exit(name) once when `pid` exits; False if it is already gone (call on_exit yourself)."""
        current = self._fds.get(name)
        if current and current[0] == pid:
            return True
        self.forget(name)
        fd = proc.pidfd_wait(pid)
        if fd is None:
            return False
        self._fds[name] = (pid, fd)
        self._loop.add_reader(fd, self._fired, name)
        return True

    def _fired(self, name: str) -> None:
        self.forget(name)
        self._on_exit(name)

    def forget(self, name: str) -> None:
        entry = self._fds.pop(name, None)
        if entry:
            self._loop.remove_reader(entry[1])
            os.close(entry[1])

    def close(self) -> None:
        for name in list(self._fds):
            self.forget(name)
