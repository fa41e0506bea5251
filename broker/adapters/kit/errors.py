"""Translating a client library's exceptions into :mod:`broker.errors`, by table.

An adapter lists :class:`Translation` rules, most specific first, and calls :func:`translate`
at its boundary (``raise translate(...) from exc``). Each rule names the client exceptions it
catches, the broker error it becomes and a one-line message with the placeholders ``{url}``
(password masked), ``{what}`` (what the adapter was doing), ``{detail}`` (the client's message
on one line) and ``{name}`` (the client exception's type). :func:`client_exceptions` lists
every exception class a client module defines, so a test can fail on one no rule catches.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from types import ModuleType

from broker.errors import BrokerError, PublishTimeoutError
from broker.urls import mask_url

__all__ = [
    "Translation",
    "client_exceptions",
    "confirm_timeout",
    "one_line",
    "translate",
    "untranslated",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Translation:
    """Client exceptions of ``catches`` become ``error`` with ``message`` (a format string)."""

    catches: tuple[type[BaseException], ...]
    error: type[BrokerError]
    message: str


def one_line(exc: BaseException) -> str:
    """The exception's message on one line; its type name when it has none or cannot render."""
    try:
        text = str(exc)
    except Exception:  # some client errors built without their arguments cannot render
        text = ""
    return " ".join((text or type(exc).__name__).split())


def translate(
    exc: BaseException, rules: Sequence[Translation], *, url: str, what: str
) -> BrokerError:
    """The broker error of the first rule that catches ``exc`` (the last rule should catch
    every exception the client raises)."""
    for rule in rules:
        if isinstance(exc, rule.catches):
            return rule.error(
                rule.message.format(
                    url=mask_url(url), what=what, detail=one_line(exc), name=type(exc).__name__
                )
            )
    return BrokerError(
        f"{mask_url(url)} failed while {what}: {type(exc).__name__}: {one_line(exc)}"
    )


def confirm_timeout(
    broker: str, url: str, what: str, seconds: float, last: BaseException
) -> PublishTimeoutError:
    """The error for a publish the broker did not confirm before its ``publish_timeout``."""
    return PublishTimeoutError(
        f"{broker} at {mask_url(url)} did not confirm {what} within {seconds:g}s "
        f"({type(last).__name__}: {one_line(last)}); check the broker, or raise "
        "publish_timeout in the URL"
    )


def client_exceptions(*modules: ModuleType) -> list[type[BaseException]]:
    """Every exception class defined in ``modules``, sorted by qualified name."""
    found = {
        obj
        for module in modules
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__ == module.__name__
    }
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


def untranslated(
    exceptions: Iterable[type[BaseException]], handled: Iterable[type[BaseException]]
) -> list[str]:
    """The names of the exception classes that are no subclass of any ``handled`` class."""
    caught = tuple(handled)
    return [cls.__name__ for cls in exceptions if not issubclass(cls, caught)]
