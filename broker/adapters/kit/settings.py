"""Typed adapter settings from a URL's query string and keyword options.

Each adapter declares its own options as a frozen dataclass whose fields come from
:func:`option` (a default plus optional ``choices`` or ``positive``), and calls
:func:`parse_settings` with its URL and keyword options. Text values are converted to the
field's type; an option the adapter does not know may be passed on to the client library when
the adapter names the client's options, and is otherwise refused with one line that says which
URL (password masked), offers the closest known name and lists the known ones::

    @dataclasses.dataclass(frozen=True, slots=True)
    class MemorySettings:
        partitions: int = option(4, positive=True)

    settings, _ = parse_settings(MemorySettings, "memory://x?partitions=2", {})
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from broker.errors import ConfigurationError
from broker.urls import mask_url

__all__ = ["convert", "option", "parse_settings", "query_options", "unknown_option"]

S = TypeVar("S")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def option(default: Any, *, choices: Collection[str] | None = None, positive: bool = False) -> Any:
    """A settings field: its default, and optionally the allowed texts or ``positive=True``."""
    metadata = {"choices": tuple(choices) if choices else None, "positive": positive}
    return dataclasses.field(default=default, metadata=metadata)


def query_options(url: str) -> dict[str, str]:
    """The options in the URL's query string (``?a=1&b=2``), as text."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _scheme(url: str) -> str:
    return urlsplit(url).scheme or "broker"


def convert(name: str, raw: Any, like: Any, url: str) -> Any:
    """``raw`` as the type of ``like`` (a type, or an example value) when ``raw`` is text.

    Booleans accept 1/0, true/false, yes/no, on/off; a ``like`` of ``None`` or ``str`` keeps
    the text. Anything that does not convert is a :class:`ConfigurationError` naming the option.
    """
    kind = like if isinstance(like, type) else type(like)
    if not isinstance(raw, str) or like is None or kind in (str, type(None)):
        return raw
    text = raw.strip()
    try:
        if kind is bool:
            if text.lower() not in (*_TRUE, *_FALSE):
                raise ValueError(text)
            return text.lower() in _TRUE
        return kind(text)
    except ValueError:
        raise ConfigurationError(
            f"{_scheme(url)}:// option {name}={raw!r} in {mask_url(url)} must be "
            f"{_article(kind.__name__)} {kind.__name__}"
        ) from None


def _either(choices: tuple[str, ...]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def unknown_option(
    url: str, name: str, known: Collection[str], *, client: str = "", suggest: Collection[str] = ()
) -> ConfigurationError:
    """The error for an option nobody takes: the closest name, and the known ones."""
    close = difflib.get_close_matches(name, [*known, *suggest], n=1)
    hint = f"; did you mean {close[0]}?" if close else ";"
    also = f", or {client}" if client else ""
    return ConfigurationError(
        f"unknown {_scheme(url)}:// option {name!r} in {mask_url(url)}{hint} "
        f"known options: {', '.join(sorted(known))}{also}"
    )


def parse_settings(
    settings_type: type[S],
    url: str,
    options: Mapping[str, Any],
    *,
    client: Mapping[str, Any] | None = None,
    client_hint: str = "",
    reserved: Collection[str] = (),
) -> tuple[S, dict[str, Any]]:
    """Settings from the URL's query string merged with ``options`` (which win), plus the
    options left for the client library.

    ``client`` maps the option names the client library takes to an example of each value
    (its default), which gives the type text is converted to; ``None`` means the client takes
    no options. ``reserved`` names client options the adapter sets itself.
    """
    fields = {f.name: f for f in dataclasses.fields(settings_type)}  # type: ignore[arg-type]
    types = typing.get_type_hints(settings_type)
    values: dict[str, Any] = {}
    passed: dict[str, Any] = {}
    for name, raw in {**query_options(url), **options}.items():
        if name in fields:
            kind = types[name] if isinstance(types[name], type) else None
            values[name] = _checked(fields[name], convert(name, raw, kind, url), url)
        elif name in reserved:
            raise ConfigurationError(
                f"{_scheme(url)}:// option {name!r} in {mask_url(url)} is set by choreograph "
                "itself and cannot be changed"
            )
        elif client is not None and name in client:
            passed[name] = convert(name, raw, client[name], url)
        else:
            raise unknown_option(url, name, fields, client=client_hint, suggest=client or ())
    return settings_type(**values), passed


def _checked(field: dataclasses.Field[Any], value: Any, url: str) -> Any:
    choices = field.metadata.get("choices")
    if choices:
        found = next((c for c in choices if str(value).lower() == c.lower()), None)
        if found is None:
            raise ConfigurationError(
                f"{_scheme(url)}:// option {field.name}={value!r} in {mask_url(url)}: "
                f"use {_either(choices)}"
            )
        return found
    if field.metadata.get("positive") and not value > 0:
        raise ConfigurationError(
            f"{_scheme(url)}:// option {field.name} in {mask_url(url)} must be a positive "
            f"number, not {value!r}"
        )
    return value
