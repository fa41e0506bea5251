"""Protobuf compatibility: Confluent's documented rules, at every level.

Several cases are adapted from Karapace's Protobuf compatibility tests
(tests/unit/protobuf/test_protobuf_compatibility.py and
tests/unit/compatibility/test_protobuf_checks.py, Copyright (c) 2023 Aiven Ltd,
Apache License 2.0), where Karapace and Confluent agree.
"""

from __future__ import annotations

import pytest

from schemas.compatibility import Resolved, check_compatibility
from schemas.model import Compatibility, Schema, SchemaType


def proto(body: str, package: str = "shop") -> Resolved:
    text = f'syntax = "proto3";\npackage {package};\n{body}\n'
    return Resolved(Schema(text, SchemaType.PROTOBUF))


def backward(old: Resolved, new: Resolved) -> bool:
    return check_compatibility(new, [(1, old)], Compatibility.BACKWARD).is_compatible


BASE = proto("message Person { string name = 1; int32 age = 2; }")


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        # fields are matched by number: adding, removing and renaming are compatible
        (proto("message Person { string name = 1; int32 age = 2; string mail = 3; }"), True),
        (proto("message Person { string name = 1; }"), True),
        (proto("message Person { string full_name = 1; int32 age = 2; }"), True),
        # a new number for a field is a removal plus an addition (Confluent; Karapace differs)
        (proto("message Person { string name = 1; int32 age = 3; }"), True),
        # type changes inside a wire-compatible group, and outside it
        (proto("message Person { string name = 1; int64 age = 2; }"), True),
        (proto("message Person { string name = 1; bool age = 2; }"), True),
        (proto("message Person { bytes name = 1; int32 age = 2; }"), True),
        (proto("message Person { string name = 1; sint32 age = 2; }"), False),
        (proto("message Person { string name = 1; string age = 2; }"), False),
        (proto("message Person { string name = 1; fixed32 age = 2; }"), False),
        (proto("message Person { string name = 1; double age = 2; }"), False),
        # scalar, message and map kinds never change into each other
        (proto("message Person { string name = 1; Age age = 2; } message Age {}"), False),
        (proto("message Person { string name = 1; map<string, int32> age = 2; }"), False),
        # repeated: numbers may not change label, strings may
        (proto("message Person { string name = 1; repeated int32 age = 2; }"), False),
        (proto("message Person { repeated string name = 1; int32 age = 2; }"), True),
        # messages may be added and reordered, not removed or renamed (Karapace's test too)
        (proto("message Other {} message Person { string name = 1; int32 age = 2; }"), True),
        (proto("message Human { string name = 1; int32 age = 2; }"), False),
        # the package must not change
        (proto("message Person { string name = 1; int32 age = 2; }", "crm"), False),
    ],
)
def test_field_and_message_rules(new: Resolved, expected: bool) -> None:
    """Each change is judged as Confluent's Protobuf rules judge it."""
    assert expected == backward(BASE, new)


ENUMS = proto("message Fred { Code code = 1; } enum Code { A = 0; B = 1; }")


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (proto("message Fred { Code code = 1; } enum Code { A = 0; B = 1; C = 2; }"), True),
        (proto("message Fred { Code code = 1; } enum Code { A = 0; }"), True),
        (proto("message Fred { Code code = 1; } enum Code { A = 0; BEE = 1; }"), True),
        # an enum field is a number: int32 reads it (Karapace: test_compatibility_enum_add)
        (proto("message Fred { int32 code = 1; }"), True),
        (proto("message Fred { string code = 1; }"), False),
    ],
)
def test_enum_rules(new: Resolved, expected: bool) -> None:
    """Enum constants may be added, renamed and removed; an enum reads like an integer."""
    assert expected == backward(ENUMS, new)


ONEOF = proto("message M { oneof pick { string a = 1; int32 b = 2; } string c = 3; int32 d = 4; }")
C_D = "string c = 3; int32 d = 4;"


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (
            proto(f"message M {{ oneof pick {{ string a = 1; int32 b = 2; bool e = 5; }} {C_D} }}"),
            True,
        ),
        (proto(f"message M {{ oneof pick {{ string a = 1; }} {C_D} }}"), False),
        (proto(f"message M {{ string a = 1; int32 b = 2; {C_D} }}"), True),
        (proto(f"message M {{ {C_D} }}"), True),
        (
            proto(
                "message M { oneof pick { string a = 1; int32 b = 2; string c = 3; } int32 d = 4; }"
            ),
            False,
        ),
        (
            proto(
                f"message M {{ oneof pick {{ string a = 1; int32 b = 2; }} oneof two {{ {C_D} }} }}"
            ),
            False,
        ),
    ],
)
def test_oneof_rules(new: Resolved, expected: bool) -> None:
    """Oneofs come and go whole; a member may leave one, independent fields may not join."""
    assert expected == backward(ONEOF, new)


def test_a_nested_type_change_is_reported_where_it_is_used() -> None:
    """A field whose message type changes incompatibly is itself incompatible."""
    old = proto("message Order { Line line = 1; } message Line { int32 qty = 1; }")
    new = proto("message Order { Line line = 1; } message Line { string qty = 1; }")
    result = check_compatibility(new, [(3, old)], Compatibility.BACKWARD)
    kinds = [m.split("'")[1] for m in result.messages if m.startswith("{errorType")]
    assert ["FIELD_SCALAR_KIND_CHANGED", "FIELD_NAMED_TYPE_CHANGED"] == kinds
    assert "{oldSchemaVersion: 3}" in result.messages


@pytest.mark.parametrize(
    ("level", "reused", "grown"),
    [
        ("NONE", True, True),
        ("BACKWARD", True, True),
        ("BACKWARD_TRANSITIVE", False, True),
        ("FORWARD", True, False),
        ("FORWARD_TRANSITIVE", False, False),
        ("FULL", True, False),
        ("FULL_TRANSITIVE", False, False),
    ],
)
def test_all_seven_levels(level: str, reused: bool, grown: bool) -> None:
    """Two histories, judged at each level.

    Reused: v1 ``int32 x = 1``, v2 drops it, v3 reuses number 1 as a string: v3 fits v2 both
    ways but not v1. Grown: a oneof gains a member in every version, which new readers read
    but old readers do not (a member they know is gone from their oneof).
    """
    reuse = [
        (1, proto("message M { int32 x = 1; }")),
        (2, proto("message M { }")),
    ]
    grow = [
        (1, proto("message M { oneof pick { string a = 1; } }")),
        (2, proto("message M { oneof pick { string a = 1; int32 b = 2; } }")),
    ]
    v3_reuse = proto("message M { string x = 1; }")
    v3_grow = proto("message M { oneof pick { string a = 1; int32 b = 2; bool c = 3; } }")
    compatibility = Compatibility(level)
    assert (reused, grown) == (
        check_compatibility(v3_reuse, reuse, compatibility).is_compatible,
        check_compatibility(v3_grow, grow, compatibility).is_compatible,
    )
