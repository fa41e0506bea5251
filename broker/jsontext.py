"""JSON for event data and structured-mode envelopes, through msgspec (5-20x the standard
library on the small documents events carry).

Decoding gives what :func:`json.loads` gives for every standard JSON document (integers of any
size stay exact) and falls back to :func:`json.loads` for what strict JSON refuses and Python
accepts (``NaN``, ``Infinity``, numbers beyond a double). Encoding is compact UTF-8; values the
standard library could not encode are encoded as msgspec does (datetimes and dates as RFC 3339,
UUIDs and decimals as text, sets and tuples as arrays, dataclasses as objects, bytes as base64),
and non-finite floats become ``null``: JSON has no ``NaN``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

__all__ = ["StrictJSONError", "dumps", "dumps_text", "loads", "loads_strict"]

_decode = msgspec.json.Decoder().decode
_DecodeError = msgspec.DecodeError

#: ``loads_strict(text)``: :func:`loads` of strict JSON only, without a fallback: raises
#: :data:`StrictJSONError` where :func:`loads` would try :func:`json.loads` (a hot path
#: calls this first and :func:`loads` only then).
loads_strict = _decode
#: What :func:`loads_strict` raises (a ``ValueError``).
StrictJSONError = msgspec.DecodeError

#: ``dumps(value)``: ``value`` as compact UTF-8 JSON bytes; TypeError for what JSON cannot hold.
dumps = msgspec.json.Encoder().encode


def dumps_text(value: Any) -> str:
    """``value`` as compact JSON text."""
    return dumps(value).decode()


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """The value of JSON ``text``; raises ValueError (as :func:`json.loads`) when it is none."""
    try:
        return _decode(text)
    except _DecodeError:
        return json.loads(bytes(text) if isinstance(text, memoryview) else text)
