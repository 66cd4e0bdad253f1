from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import pytest

from protocol.picklable import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Pair:
    name: str
    values: tuple[int, ...] = ()
    extra: dict[str, str] | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Single:
    name: str


def test_round_trip_by_field_values() -> None:
    pair = Pair("a", (1, 2), {"k": "v"})
    assert pair.__reduce__() == (Pair, ("a", (1, 2), {"k": "v"}))
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps([pair, Pair("b"), Single("c")], protocol=protocol))
        assert again == [pair, Pair("b"), Single("c")]
        assert type(again[0]) is Pair and type(again[2]) is Single


def test_nested_objects_are_pickled_by_their_own_rules() -> None:
    outer = Pair("x", (), {"inner": "Single"})
    nested = [Single("s"), outer, Single("s")]
    assert pickle.loads(pickle.dumps(nested)) == nested


def test_fields_the_constructor_cannot_take_by_position_are_refused() -> None:
    @dataclass(frozen=True)
    class Derived:
        name: str
        size: int = field(init=False, default=0)

    @dataclass(frozen=True, kw_only=True)
    class KeywordOnly:
        name: str

    for cls in (Derived, KeywordOnly):
        with pytest.raises(TypeError, match="not positional"):
            pickled_by_fields(cls)
    with pytest.raises(TypeError, match="not a dataclass"):
        pickled_by_fields(int)
