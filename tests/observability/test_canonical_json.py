"""``canonical_json``: json.dumps's canonical text (sorted keys, compact), byte for byte, via orjson
where a walk proves the two spell the value alike. Content hashes are taken over this text."""

from __future__ import annotations

import json
from enum import Enum, StrEnum
from typing import Any

import pytest

from jax_assistant.observability import redaction
from jax_assistant.observability.redaction import RedactedJson, canonical_json


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Colour(Enum):
    RED = 1


class Key(StrEnum):
    LEVERAGE = "leverage"


TRICKY: list[Any] = [
    1e16,
    1e15,
    9999999999999998.0,
    1.2345678901234568e17,
    1e-05,
    1e-4,
    0.0001234,
    9.99e-05,
    1.5e-07,
    5e-324,
    1.7976931348623157e308,
    0.1,
    -0.0,
    0.0,
    -1e-05,
    2.09532966900847e-05,
    float("nan"),
    float("inf"),
    -float("inf"),
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    True,
    False,
    None,
    "",
    "plain ascii",
    "café",
    "雪",
    "\U0001f600",
    "del\x7f",
    'ctl \x00\x01\x1f\b\f\n\r\t " \\ /',
    "\u2028\u2029",
    "1e5 and 0.00001 in text",
    {"b": 1, "a": [1.0, 2.5, {"z": None, "y": "x"}], "c": {"e": 1e-05}},
    {"é": 1, "a": 2},
    {"a\x7f": 1},
    {1: "int key", 2: "another"},
    [[[[1e16]]]],
    [1, "two", 3.0, None, True, {"k": [0.5, -0.25]}],
    {"nested": {"deeper": {"deepest": [1e-7, 123.456, -7.0]}}},
    (1, 2),
    {"t": (1.0, "x")},
    # str subclasses (after the plain key "leverage" was seen above): json writes their text too.
    {Key.LEVERAGE: 1.5, "b": 2},
    {"a": Key.LEVERAGE},
]


@pytest.mark.parametrize("value", TRICKY, ids=repr)
def test_canonical_json_is_json_dumps_byte_for_byte(value: Any) -> None:
    assert canonical_json(value) == _json(value)


def test_what_json_refuses_is_refused_the_same_way() -> None:
    for bad in ({"a": object()}, {"e": Colour.RED}, {(1, 2): 3}):
        with pytest.raises(TypeError):
            _json(bad)
        with pytest.raises(TypeError):
            canonical_json(bad)


def test_the_fallback_gets_what_orjson_would_spell_differently() -> None:
    seen: list[Any] = []

    def fallback(value: Any) -> str:
        seen.append(value)
        return _json(value)

    plain = {"b": [1, 2.5, None, True], "a": {"c": "text", "d": 0.0001}}
    assert canonical_json(plain, fallback) == _json(plain)
    assert seen == []  # the fast path
    for odd in ({"x": 1e-05}, {"x": 1e16}, {"x": "é"}, {"x": float("nan")}, {"x": 2**64}, {1: 2}):
        assert canonical_json(odd, fallback) == _json(odd)
    assert len(seen) == 6


def test_a_fallback_with_a_default_sees_the_exotic_values() -> None:
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
    value = {"when": Colour.RED, "n": 1}
    assert canonical_json(value, encoder.encode) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), default=str
    )


def test_deep_nesting_falls_back_to_json() -> None:
    deep: Any = 1.5
    for _ in range(300):  # deeper than orjson's limit, within json's
        deep = [deep]
    assert canonical_json(deep) == _json(deep)


def test_a_many_keyed_value_does_not_grow_the_key_cache_unbounded() -> None:
    canonical_json({f"k{i}": i for i in range(redaction._KEY_CACHE_MAX + 100)})
    assert len(redaction._ALIKE_KEYS) <= redaction._KEY_CACHE_MAX


def test_redacted_json_encoded_is_redacted_and_carries_its_canonical_text() -> None:
    made = RedactedJson.encoded({"id": "e1", "payload": {"token": "t0p", "close": 1e-05, "n": "é"}})
    assert made == {"id": "e1", "payload": {"token": "[REDACTED]", "close": 1e-05, "n": "é"}}
    assert made.canonical == _json(dict(made))


def test_redacted_json_encoded_leaves_what_json_refuses_unencoded() -> None:
    made = RedactedJson.encoded({"id": "e1", "payload": {"colour": Colour.RED}})
    assert made["payload"] == {"colour": Colour.RED}
    assert made.canonical is None
