"""Running a package manager: retries for transient failures, and failure output turned into errors.

Each npm / uv / pip run goes through `run_manager` (one run, classified) inside `retrying` (tenacity,
exponential backoff with jitter, TransientError only). A PermanentError (package or version not
found) fails at once, with the manager's own reason line in its message.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from mcp_reconcile import proc
from mcp_reconcile.errors import ActionError, PermanentError, TransientError
from mcp_reconcile.slots import sleep_between_tries

# Attempts per package-manager run (the first one included) before a TransientError is given up.
INSTALL_ATTEMPTS = 4
# First backoff between attempts, doubled each time with jitter, and its cap.
RETRY_INITIAL_S = 1.0
RETRY_MAX_S = 20.0
# Longest reason line carried into an error message; package managers can print very long lines.
REASON_MAX_CHARS = 300

ACTION = "install"

log = structlog.get_logger("mcp_reconcile")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Rule:
    """One output pattern of a package manager and what it means; the first rule that matches wins."""

    pattern: str
    permanent: bool

    def search(self, line: str) -> bool:
        return re.search(self.pattern, line) is not None


@dataclass(frozen=True)
class Manager:
    """How to read one package manager's failure output."""

    tool: str                                # "npm" | "uv" | "pip", the message's prefix
    rules: Sequence[Rule]                    # in precedence order
    clean: Callable[[str], str] = str.strip  # strips the manager's line prefixes ("npm error ")


async def retrying(run: Callable[[], Awaitable[T]], *, server: str, source: str, sleep: Sleep | None = None,
                   attempts: int = INSTALL_ATTEMPTS) -> T:
    """`await run()`, again after a backoff while it raises TransientError, at most `attempts` times.

    Between attempts the install slot is given back (slots.py), so one server's retries never hold back
    another server's install. `sleep` replaces that wait (tests pass a recording fake).
    """

    def note_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        log.warning("install.retried", server=server, source=source, attempt=state.attempt_number,
                    delay_s=round(delay, 2) if delay is not None else None, error=str(exc))

    retryer = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=RETRY_INITIAL_S, max=RETRY_MAX_S),
        retry=retry_if_exception_type(TransientError),
        sleep=sleep or sleep_between_tries, reraise=True, before_sleep=note_retry)
    async for attempt in retryer:
        with attempt:
            return await run()
    raise AssertionError("unreachable: tenacity either returns or reraises")


async def run_manager(argv: Sequence[str], manager: Manager, *, server: str, package: str, ref: str,
                      env: Mapping[str, str], timeout_s: float, cwd: str | None = None) -> proc.CommandResult:
    """Run one package-manager command; a non-zero exit or a timeout raises the classified error."""
    result = await proc.run_command(argv, env=env, cwd=cwd, timeout_s=timeout_s)
    if result.timed_out:
        raise TransientError(server, ACTION, f"{manager.tool}: timed out after {timeout_s:.0f}s installing {ref}")
    if result.returncode != 0:
        raise classify_failure(result.stderr + "\n" + result.stdout, manager, server=server, package=package,
                               ref=ref, returncode=result.returncode)
    return result


def classify_failure(output: str, manager: Manager, *, server: str, package: str, ref: str,
                     returncode: int = 1) -> ActionError:
    """The error a failed run means: Permanent or Transient by the manager's rules, else Transient.

    An unrecognised failure is Transient so a network hiccup spelled in a way we do not know is
    retried a bounded number of times rather than parking the server for good.
    """
    lines = [cleaned for raw in output.splitlines() if (cleaned := manager.clean(raw))]
    for rule in manager.rules:
        line = next((ln for ln in lines if rule.search(ln)), None)
        if line is None:
            continue
        reason = f"{manager.tool}: {_naming(line, package, ref)}"
        if rule.permanent:
            return PermanentError(server, ACTION, reason)
        return TransientError(server, ACTION, reason)
    last = next((ln for ln in lines if re.search(r"(?i)\berror\b", ln)), lines[-1] if lines else "")
    reason = f"{manager.tool}: exited {returncode}: {_naming(last, package, ref)}" if last else \
        f"{manager.tool}: exited {returncode} installing {ref}"
    return TransientError(server, ACTION, reason)


def _naming(line: str, package: str, ref: str) -> str:
    """The reason line, trimmed, naming the package even when the manager's line does not."""
    line = line.rstrip(". ")
    if len(line) > REASON_MAX_CHARS:
        line = line[:REASON_MAX_CHARS] + "..."
    if package.lower() not in line.lower():
        line += f" (installing {ref})"
    return line
