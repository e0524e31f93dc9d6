from __future__ import annotations

import copy
from typing import Any

import pytest

from jax_assistant.domain import AuditEvent
from jax_assistant.observability import REDACTED, is_sensitive_key, redact

SENSITIVE = [
    # contains password / secret / token / api_key / apikey / credential (any case)
    "password",
    "DB_PASSWORD",
    "userPassword",
    "secret",
    "client_secret",
    "ClientSecret",
    "token",
    "access_token",
    "refreshToken",
    "api_key",
    "POLYGON_API_KEY",
    "apikey",
    "apiKey",
    "credential",
    "aws_credentials",
    # both "broker" and "key"
    "broker_key",
    "BrokerKey",
    "key_of_broker",
    # exact names (case-insensitive)
    "order_payload",
    "ORDER_PAYLOAD",
    "order_request",
    "raw_order",
    "account_id",
    "accountId",
    "accountid",
    "account-id",
    "Account-ID",
    "acct_id",
]

KEPT = [
    "symbol",
    "event",
    "broker",  # broker without key
    "monkey",  # key without broker
    "account",
    "account_id_hash",  # the account-id rules are exact matches, not substrings
    "raw_orders",
    "order_payload_size",
    "acct",
]


@pytest.mark.parametrize("key", SENSITIVE)
def test_sensitive_key_is_redacted(key: str) -> None:
    assert is_sensitive_key(key)
    assert redact({key: "s3cr3t", "symbol": "AAPL"}) == {key: REDACTED, "symbol": "AAPL"}


@pytest.mark.parametrize("key", KEPT)
def test_other_keys_are_kept(key: str) -> None:
    assert not is_sensitive_key(key)
    assert redact({key: "value"}) == {key: "value"}


def test_nested_structures() -> None:
    data: dict[str, Any] = {
        "run": {
            "symbols": ["AAPL", {"broker": {"api_key": "k1", "name": "ibkr"}}],
            "calls": ({"token": "t", "ok": True}, [{"password": 1}]),
            "credentials": {"user": "u", "pass": "p"},  # a sensitive key hides its whole value
        },
        "count": 3,
    }
    assert redact(data) == {
        "run": {
            "symbols": ["AAPL", {"broker": {"api_key": REDACTED, "name": "ibkr"}}],
            "calls": ({"token": REDACTED, "ok": True}, [{"password": REDACTED}]),
            "credentials": REDACTED,
        },
        "count": 3,
    }


def test_input_is_not_mutated_and_a_new_object_is_returned() -> None:
    data: dict[str, Any] = {"a": {"secret": "x", "items": [{"token": "y"}]}, "b": [1, 2]}
    before = copy.deepcopy(data)
    out = redact(data)
    assert data == before
    assert out is not data
    assert out["a"] is not data["a"]
    assert out["a"]["items"] is not data["a"]["items"]


def test_non_string_keys_and_scalars() -> None:
    assert redact({1: "one", None: "none"}) == {1: "one", None: "none"}
    assert redact("password") == "password"  # a bare value has no key to match
    assert redact(42) == 42


def test_pydantic_model_and_dumped_model() -> None:
    event = AuditEvent(
        id="a1",
        correlation_id="c1",
        action="persist",
        outcome="success",
        payload={"order_request": {"qty": 1}, "accountId": "U123", "symbol": "MSFT"},
    )
    out = redact(event)
    assert out["correlationId"] == "c1"
    assert out["payload"] == {"order_request": REDACTED, "accountId": REDACTED, "symbol": "MSFT"}
    assert redact(event.model_dump())["payload"]["accountId"] == REDACTED
    assert event.payload["accountId"] == "U123"


def test_cycles_do_not_recurse_forever() -> None:
    data: dict[str, Any] = {"name": "x", "password": "p"}
    data["self"] = data
    out = redact(data)
    assert out["password"] == REDACTED
    assert out["self"] == "[CYCLE]"


def test_leaves_of_every_kind_inside_dicts_and_lists() -> None:
    # The exact-type fast paths (dict, list, str, numbers) and the general one (subclasses, tuples,
    # models) must redact alike, at any depth.
    from enum import StrEnum

    class Kind(StrEnum):
        GAP = "gap"

    class Tags(list[Any]):
        pass

    data: dict[str, Any] = {
        "n": [1, 2.5, True, None, "Bearer abc.def", Kind.GAP],
        "nested": [{"apiKey": 1, "ok": "jaxk_0123456789ab_secretpart"}],
        "tags": Tags(["x", {"token": "t"}]),
        "pair": ("a", {"password": "p"}),
    }
    out = redact(data)
    assert out == {
        "n": [1, 2.5, True, None, "[REDACTED]", "gap"],
        "nested": [{"apiKey": REDACTED, "ok": REDACTED}],
        "tags": ["x", {"token": REDACTED}],
        "pair": ("a", {"password": REDACTED}),
    }
    assert type(out["tags"]) is list and type(out["pair"]) is tuple
    assert out["n"][5] is Kind.GAP  # a str subclass without a secret is kept as it is


def test_cycle_through_a_tuple_and_a_list() -> None:
    inner: list[Any] = ["secret text"]
    pair = (inner, {"secret": "s"})
    inner.append(pair)
    out = redact({"pair": pair})
    assert out == {"pair": (["secret text", "[CYCLE]"], {"secret": REDACTED})}


def test_non_string_keys_go_through_the_rules_as_text() -> None:
    assert redact({("api", "key"): 1, 7: "x"}) == {("api", "key"): 1, 7: "x"}
    assert redact({b"x": {"token": 1}}) == {b"x": {"token": REDACTED}}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "BeArEr", "bEARER"])
def test_a_bearer_credential_is_redacted_in_any_letter_case(scheme: str) -> None:
    # The HTTP auth scheme is case-insensitive: a log line or a memory must not keep the token
    # because it was spelt unusually.
    text = f"sent {scheme} tok.secret-123 upstream"
    out = redact({"note": text, "list": [text], "nested": {"deep": (text,)}})
    for value in (out["note"], out["list"][0], out["nested"]["deep"][0]):
        assert "tok.secret-123" not in value and REDACTED in value
