"""Our exceptions as the command line shows them: one line on stderr and an exit code.

The library packages raise domain errors and know nothing about terminals or commands. This
module is the one place that maps them, by class:

==============  ===================================  ==================================
package         usage error: exit 2                  any other error of the root: exit 1
==============  ===================================  ==================================
broker          ``ConfigurationError``               ``BrokerError``
schemas         ``InvalidInputError``                ``RegistryError``
connectors      ``OutboxConfigError``                ``OutboxError``
saga_monitor    ``SagaConfigError``                  ``SagaError``
==============  ===================================  ==================================

Anything else is a bug and keeps its traceback. Where a command would help the user (the one
that creates what is missing), the hint is added here, not in the library's message.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.errors import BrokerError, ConfigurationError
from connectors.errors import OutboxConfigError, OutboxError, OutboxMissingError
from saga_monitor.errors import SagaConfigError, SagaError
from schemas.errors import InvalidInputError, RegistryError, RegistryUnavailableError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "exit_code", "message"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

USAGE_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    InvalidInputError,
    OutboxConfigError,
    SagaConfigError,
)
ROOT_ERRORS: tuple[type[Exception], ...] = (BrokerError, RegistryError, OutboxError, SagaError)


def _create_outbox(exc: BaseException) -> str:
    assert isinstance(exc, OutboxMissingError)
    return f"run: choreo outbox init --db {exc.database} --table {exc.table}"


def _start_registry(_: BaseException) -> str:
    return "run: choreo registry serve, or set --registry / CHOREO_REGISTRY_URL"


_HINTS: tuple[tuple[type[Exception], Callable[[BaseException], str]], ...] = (
    (OutboxMissingError, _create_outbox),
    (RegistryUnavailableError, _start_registry),
)


def exit_code(exc: BaseException) -> int | None:
    """The exit code for one of our own errors, or None for a bug (which keeps its traceback)."""
    if isinstance(exc, USAGE_ERRORS):
        return EXIT_USAGE
    if isinstance(exc, ROOT_ERRORS):
        return EXIT_FAILURE
    return None


def message(exc: BaseException) -> str:
    """The line the user sees for ``exc``: its message, plus a command to run where one helps."""
    text = str(exc)
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return f"{text}; {hint(exc)}"
    return text
