"""Pins what a run retains (rows, texts, ids, content hashes) and what a retain stores for odd data.

The expected values were recorded with the code before the retain path was made faster (issue #7 §5):
a faster retain must store the same memories, byte for byte where it matters (ids, hashes, texts) and
value for value in ``data`` (its JSON text may be spelled differently, e.g. without spaces).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import StatementError
from tests.pgutil import sqlite_url
from tests.storage.factories import make_trade

from jax_assistant.config import Settings
from jax_assistant.memory import Memory
from jax_assistant.memory.embedded import EmbeddedBackend, content_hash, hash_and_stored_data
from jax_assistant.memory.models import MemoryItem, MemorySource
from jax_assistant.observability.redaction import RedactedJson, redacted_dumps
from jax_assistant.orchestrator import Orchestrator, RunRequest
from jax_assistant.storage import open_database
from jax_assistant.storage.db import EncodedJson

SYMBOLS = ["ACME.SIM", "BOLT.SIM", "BYTE.SIM", "MEDX.SIM"]
COLUMNS = (
    "id, bank, type, symbol, ts, tags, summary, data, source_system, source_ref, document_id,"
    " content_hash, body, invalidated_at"
)
# Recorded with the code before the change (see the module docstring).
RUN_MEMORIES = 7
RUN_DIGEST = "f2ce1d7ca2c47838cc563116cab01c3b122750818d80cf34a113a623a41e1097"


def _rows(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        cur = con.execute(f"SELECT {COLUMNS} FROM memories ORDER BY id")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur]
    finally:
        con.close()
    for row in rows:
        # The stored JSON's spelling is free, its value is not (key order included: recall returns it).
        row["data"] = list(_pairs(json.loads(row["data"])))
        row["tags"] = json.loads(row["tags"])
    return rows


def _pairs(value: Any) -> Any:
    """``value`` with every object as its list of (key, value) pairs, so key order is compared too."""
    if isinstance(value, dict):
        return [[k, _pairs(v)] for k, v in value.items()]
    if isinstance(value, list):
        return [_pairs(v) for v in value]
    return value


async def test_a_run_retains_the_same_memories_as_before(tmp_path: Path) -> None:
    settings = Settings(database_url=sqlite_url(tmp_path), lookback=20)
    async with Orchestrator(settings) as orch:
        await orch.start_run(
            RunRequest(symbols=SYMBOLS, as_of=date(2024, 3, 15), run_id="run_20240315T000000_pinned")
        )
    rows = _rows(tmp_path / "jax.db")
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    assert (len(rows), digest) == (RUN_MEMORIES, RUN_DIGEST)


def _item(data: dict[str, Any], doc: str) -> MemoryItem:
    return MemoryItem(
        document_id=doc,
        ts=datetime(2024, 3, 15, tzinfo=UTC),
        type="note",
        symbol="acme",
        tags=["Pinned"],
        summary="a pinned memory",
        data=data,
        source=MemorySource(system="test", ref="r1"),
    )


ODD_DATA: dict[str, dict[str, Any]] = {
    "unicode": {"text": "café ☕ naïve", "ключ": "значение", "nested": [{"é": 1.5}]},
    "floats": {"small": 1.6e-05, "big": 1e16, "neg": -0.0, "many": [0.1, 2.5e-7, 123456789.123, 1e300]},
    "ints": {"big": 2**70, "neg": -(2**63), "bool": True, "none": None},
    "secrets": {
        "API_Key": "x",
        "nested": {"brokerKey": "y", "ok": "Bearer abc.def", "list": ["jaxk_0123456789ab_zz"]},
        "account_id": 7,
        "fine": "EARER-free text",
    },
    "tuples": {"pair": (1, "two"), "deep": {"a": [{"b": ({"token": 1},)}]}},
    "order": {"z": 1, "a": 2, "m": {"y": 1, "b": 2}},
}
# (content hash, stored data) per case, recorded with the code before the change.
ODD_EXPECTED: dict[str, tuple[str, Any]] = {
    "unicode": (
        "8d10c1b7815c6ca30ce5d81edce31d7de049b59f160c48c77b734341f177eded",
        [["text", "café ☕ naïve"], ["ключ", "значение"], ["nested", [[["é", 1.5]]]]],
    ),
    "floats": (
        "39c87ec69f9926a36e66aac55f366f50c973412163a25d2d99953a92891e4a66",
        [["small", 1.6e-05], ["big", 1e16], ["neg", -0.0], ["many", [0.1, 2.5e-07, 123456789.123, 1e300]]],
    ),
    "ints": (
        "711c987ad69f1f53baca77b3705976c2a75e715e42bf57ec855ff006ff10bbad",
        [["big", 2**70], ["neg", -(2**63)], ["bool", True], ["none", None]],
    ),
    "secrets": (
        "1681d61738c616d1af16c49eb1d511baad72649b7afd98e756966ba8472841e6",
        [
            ["API_Key", "[REDACTED]"],
            ["nested", [["brokerKey", "[REDACTED]"], ["ok", "[REDACTED]"], ["list", ["[REDACTED]"]]]],
            ["account_id", "[REDACTED]"],
            ["fine", "EARER-free text"],
        ],
    ),
    "tuples": (
        "cc8d2138d989e5e1f45c494fd11b89da400bcb8430f81a3761d120cdf63df5bd",
        [["pair", [1, "two"]], ["deep", [["a", [[["b", [[["token", "[REDACTED]"]]]]]]]]]],
    ),
    "order": (
        "a8f444849a0c34e54e4c02fea5aa44f92bf28bfae136e4f9fd52c85ea4a22f2f",
        [["z", 1], ["a", 2], ["m", [["y", 1], ["b", 2]]]],
    ),
}


async def _retain_odd(tmp_path: Path) -> dict[str, tuple[str, Any]]:
    db = await open_database(sqlite_url(tmp_path))
    try:
        memory = Memory(EmbeddedBackend(db, Settings().memory))
        await memory.retain_many([_item(d, f"doc:{k}") for k, d in ODD_DATA.items()], bank="pinned")
    finally:
        await db.close()
    got = {}
    for row in _rows(tmp_path / "jax.db"):
        got[row["document_id"].removeprefix("doc:")] = (row["content_hash"], row["data"])
    return got


async def test_odd_data_is_stored_and_hashed_as_before(tmp_path: Path) -> None:
    got = await _retain_odd(tmp_path)
    assert got == ODD_EXPECTED


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"x": math.nan}, ValueError),
        ({"x": [math.inf]}, ValueError),
        ({"when": datetime(2024, 1, 1, tzinfo=UTC)}, TypeError),
        ({"x": {1, 2}}, TypeError),
    ],
    ids=["nan", "inf", "datetime", "set"],
)
async def test_data_json_cannot_hold_is_refused_by_the_store_as_before(
    tmp_path: Path, data: dict[str, Any], error: type[Exception]
) -> None:
    db = await open_database(sqlite_url(tmp_path))
    try:
        memory = Memory(EmbeddedBackend(db, Settings().memory))
        with pytest.raises(StatementError) as caught:
            await memory.retain_many([_item(data, "doc:bad")], bank="pinned")
        assert isinstance(caught.value.orig, error)
    finally:
        await db.close()


def _expected_hash(item: MemoryItem) -> str:
    """The hash formula written out: sha256 of the sorted, compact JSON of what identifies the memory."""
    payload = {
        "ts": "2024-03-15T00:00:00+00:00",
        "type": "note",
        "symbol": "ACME",
        "tags": ["pinned"],
        "summary": "a pinned memory",
        "data": item.data,
        "source": {"system": "test", "ref": "r1"},
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_content_hash_is_the_canonical_json_sha256() -> None:
    item = _item({"b": [1.6e-05, "é"], "a": {"y": None, "x": True}}, "doc:h")
    assert content_hash(item) == _expected_hash(item)


def test_plain_data_is_stored_pre_encoded_and_the_rest_left_to_the_column() -> None:
    plain = hash_and_stored_data(_item({"a": [1, 2.5e-07, None, True, "x"], "b": {"c": "d"}}, "doc:p"))[1]
    assert isinstance(plain, EncodedJson) and json.loads(plain) == {
        "a": [1, 2.5e-07, None, True, "x"],
        "b": {"c": "d"},
    }
    for data in ODD_DATA["unicode"], ODD_DATA["ints"], {"x": math.nan}, {"x": {1, 2}}:
        stored = hash_and_stored_data(_item(data, "doc:o"))[1]
        assert not isinstance(stored, EncodedJson) and stored == data
    # A string holding the words: pre-encoded when orjson spelled the text (no NaN can be there), left
    # to the column when json did (its text is not parsed to tell a string from a number).
    for data, pre_encoded in ({"s": "NaN"}, True), ({"v": {"s": "Infinity", "x": 1e-05}}, False):
        stored = hash_and_stored_data(_item(data, "doc:w"))[1]
        assert isinstance(stored, EncodedJson) is pre_encoded
        assert (json.loads(stored) if pre_encoded else stored) == data


def test_a_setup_holding_a_nan_keeps_no_canonical_text_and_is_refused_as_before(tmp_path: Path) -> None:
    trade = make_trade()
    risk = trade.risk
    constraints = risk.constraints.model_copy(update={"risk_metrics": {"leverage": math.nan}})
    odd = risk.model_copy(update={"constraints": constraints})
    setup = redacted_dumps({"setup": trade.setup, "risk": odd})
    assert setup.canonical is None  # json's text shows a NaN: the hash encodes it and sees it
    item = _item({"setups": [setup]}, "doc:n")
    digest, stored = hash_and_stored_data(item)
    assert digest == _expected_hash(item)
    assert stored is item.data  # left to the column's encoder, which refuses NaN


def test_a_hash_using_the_setups_canonical_json_is_the_same_hash() -> None:
    trade = make_trade()
    setups = [redacted_dumps({"setup": trade.setup, "risk": trade.risk}) for _ in range(2)]
    assert all(s.canonical for s in setups)  # the redaction kept it, so the hash does not re-encode
    data = {"z": 1, "setups": setups, "signals": [RedactedJson({"x": "é"})], "a": {"b": [1.5e-07]}}
    item = _item(data, "doc:c")
    assert content_hash(item) == _expected_hash(item)


def test_a_hash_using_the_signals_canonical_json_is_the_same_hash() -> None:
    signals = [
        RedactedJson.encoded({"id": "e1", "payload": {"close": 1e-05, "name": "é", "big": 1e16}}),
        RedactedJson.encoded({"id": "e2", "payload": {"v": 0.5, "api_key": "k"}}),
    ]
    assert all(s.canonical for s in signals)  # encoded once, reused by every decision carrying them
    item = _item({"signals": signals, "setups": [], "inputs": {"lookback": 60}}, "doc:s")
    assert content_hash(item) == _expected_hash(item)
