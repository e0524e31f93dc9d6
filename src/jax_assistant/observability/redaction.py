"""Key-based redaction applied before anything is logged, audited or retained.

The rules are the contract's, verbatim (``reference/jax-contracts.md``, Memory section): a value is replaced
by ``[REDACTED]`` when its key, compared case-insensitively,

- contains ``password``, ``secret``, ``token``, ``api_key``, ``apikey`` or ``credential``;
- contains both ``broker`` and ``key``;
- or equals ``order_payload``, ``order_request``, ``raw_order``, ``account_id``, ``accountid``,
  ``account-id`` or ``acct_id``.

On top of the contract's rules, for HTTP: keys containing ``authorization``, ``cookie`` or ``api-key``
(headers such as ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-API-Key``) are
redacted too, and in any string value a bearer credential (``Bearer <token>``) or one of our own API
keys (``jaxk_...``) is replaced, so a key pasted into free text does not reach a log either. Other
secrets in free text (a log message, a summary) are not detected.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import Enum
from functools import lru_cache
from typing import Any, NoReturn, Self

import orjson
from pydantic import BaseModel

REDACTED = "[REDACTED]"

SENSITIVE_KEY_PARTS: tuple[str, ...] = ("password", "secret", "token", "api_key", "apikey", "credential")
SENSITIVE_EXACT_KEYS: frozenset[str] = frozenset(
    {"order_payload", "order_request", "raw_order", "account_id", "accountid", "account-id", "acct_id"}
)

# HTTP credentials; their header names match none of the contract's parts.
HTTP_SENSITIVE_KEY_PARTS: tuple[str, ...] = ("authorization", "cookie", "api-key")
# The secret of a bearer header or of one of our keys, wherever it appears in a string.
_SECRET_IN_TEXT = re.compile(r"(?i:bearer)\s+[^\s\"',;]+|jaxk_[0-9a-f]{12}_[A-Za-z0-9_-]+")

# Stand-in for a container that contains itself; recursing into it would never end.
_CYCLE = "[CYCLE]"


# Cached because the same few dozen keys (event, level, symbol, ...) are checked on every log line.
@lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    k = key.lower()
    if k in SENSITIVE_EXACT_KEYS:
        return True
    if any(part in k for part in SENSITIVE_KEY_PARTS) or any(p in k for p in HTTP_SENSITIVE_KEY_PARTS):
        return True
    return "broker" in k and "key" in k


def redact(obj: Any) -> Any:
    """A redacted copy of ``obj``; the input is never mutated.

    Walks mappings (returned as dicts), lists, tuples and pydantic models (dumped to JSON-compatible data
    with their wire aliases first). Any other value is returned as is.
    """
    return _redact(obj, set())


def redact_text(text: str) -> str:
    """``text`` with bearer credentials and API keys replaced (two substring checks when there are none).

    The scheme is case-insensitive (``BeArEr`` too), so the check is on the lower-cased text: as cheap
    as looking for the usual spellings, and it misses none."""
    if "jaxk_" not in text and "bearer" not in text.lower():
        return text
    return _SECRET_IN_TEXT.sub(REDACTED, text)


# Exact types that are returned as they are (no key, nothing to walk). ``bool`` is a subclass of int,
# so every one is named: the fast paths below compare ``type(x)``, never ``isinstance``.
_SCALARS: frozenset[type] = frozenset({int, float, bool, type(None)})
# is_sensitive_key per str key seen, without the lru_cache call: a retained decision has hundreds of
# keys (setups with their risk), and the lookup is most of a leaf's cost. Bounded like that cache.
_KEY_SENSITIVE: dict[str, bool] = {}
_KEY_CACHE_MAX = 4096


def _sensitive(key: Any) -> bool:
    if type(key) is str:
        known = _KEY_SENSITIVE.get(key)
        if known is not None:
            return known
        known = is_sensitive_key(key)
        if len(_KEY_SENSITIVE) < _KEY_CACHE_MAX:
            _KEY_SENSITIVE[key] = known
        return known
    return is_sensitive_key(str(key))


def _redact(obj: Any, active: set[int]) -> Any:
    # Exact-type fast paths first: the JSON-shaped data retained and logged is plain dicts, lists, str
    # and numbers, and redacting a decision walks ~500 of them. Subclasses take the general path below.
    kind = type(obj)
    if kind is dict:
        return _redact_dict(obj, active)
    if kind is list:
        return _redact_list(obj, active)
    if kind is str:
        return redact_text(obj)
    if kind in _SCALARS or kind is RedactedJson:
        return obj
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Mapping):
        if id(obj) in active:
            return _CYCLE
        active.add(id(obj))
        try:
            return {k: REDACTED if _sensitive(k) else _redact(v, active) for k, v in obj.items()}
        finally:
            active.discard(id(obj))
    if isinstance(obj, list | tuple):
        items = _redact_list(obj, active)
        return items if isinstance(obj, list) or items is _CYCLE else tuple(items)
    return obj


def _redact_dict(obj: dict[Any, Any], active: set[int]) -> Any:
    key = id(obj)
    if key in active:
        return _CYCLE
    active.add(key)
    known = _KEY_SENSITIVE.get
    try:
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            sensitive = known(k) if type(k) is str else None
            if sensitive is None:
                sensitive = _sensitive(k)
            if sensitive:
                out[k] = REDACTED
                continue
            kind = type(v)
            # Leaves inline (a call per leaf was most of the walk): scalars as they are, strings through
            # redact_text's substring checks (made here first: most strings hold none of them).
            if kind is str:
                out[k] = v if "jaxk_" not in v and "bearer" not in v.lower() else redact_text(v)
            elif kind in _SCALARS:
                out[k] = v
            elif kind is dict:
                out[k] = _redact_dict(v, active)
            elif kind is list:
                out[k] = _redact_list(v, active)
            else:
                out[k] = _redact(v, active)
        return out
    finally:
        active.discard(key)


def _redact_list(obj: list[Any] | tuple[Any, ...], active: set[int]) -> Any:
    key = id(obj)
    if key in active:
        return _CYCLE
    active.add(key)
    try:
        out: list[Any] = []
        append = out.append
        for v in obj:
            kind = type(v)
            if kind is str:
                append(v if "jaxk_" not in v and "bearer" not in v.lower() else redact_text(v))
            elif kind in _SCALARS:
                append(v)
            elif kind is dict:
                append(_redact_dict(v, active))
            else:
                append(_redact(v, active))
        return out
    finally:
        active.discard(key)


# --------------------------------------------------------------------------- canonical JSON

# json.dumps's canonical form (what content hashes are taken over); also the fallback of canonical_json.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# The exact types orjson and the json module spell alike whatever their value.
_ALIKE = frozenset({int, bool, type(None)})


def _alike_text(text: str) -> bool:
    # json escapes every non-ASCII character and DEL (\u007f); orjson writes both as they are. Other
    # control characters are escaped the same way by both.
    return text.isascii() and "\x7f" not in text


# Keys already seen to be spelled alike: the same few dozen (a setup's fields) recur in every dump.
_ALIKE_KEYS: set[str] = set()


def _spelled_alike(value: Any) -> bool:
    """Whether ``orjson.dumps(value, option=OPT_SORT_KEYS)`` is byte for byte the canonical json text:
    only exact dict/list/str/int/float/bool/None, str keys, ASCII text without DEL, and floats that
    Python's repr prints without an exponent (from 1e-4 below 1e16, or zero). Both print the shortest
    round-trip digits; they differ in form only where repr uses an exponent ("1e-05" vs orjson's
    "0.00001", "1e+16" vs "1e16") and for NaN/Infinity (orjson writes null). Ints out of orjson's
    64-bit range make it raise (the caller falls back). Leaves are checked inline: this walk is most
    of what the fast path costs."""
    kind = type(value)
    if kind is dict:
        known = _ALIKE_KEYS
        for key in value:
            if key not in known:
                if type(key) is not str or not _alike_text(key):
                    return False
                if len(known) < _KEY_CACHE_MAX:
                    known.add(key)
        return _all_alike(value.values())
    if kind is list:
        return _all_alike(value)
    if kind is str:
        return _alike_text(value)
    if kind is float:
        return bool(1e-4 <= abs(value) < 1e16 or value == 0.0)
    return kind in _ALIKE


def _all_alike(items: Iterable[Any]) -> bool:
    """:func:`_spelled_alike` of every one of ``items``, the leaves checked here without a call each."""
    for item in items:
        sub = type(item)
        if sub is str:
            if not item.isascii() or "\x7f" in item:
                return False
        elif sub is float:
            if not (1e-4 <= abs(item) < 1e16 or item == 0.0):
                return False
        elif sub not in _ALIKE and not _spelled_alike(item):
            return False
    return True


def canonical_json(value: Any, fallback: typing.Callable[[Any], str] = _CANONICAL_ENCODER.encode) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"))``, the same text, ~4x cheaper.

    orjson encodes it when a walk of ``value`` shows their output cannot differ (see
    :func:`_spelled_alike`); anything else, and what orjson refuses, goes to ``fallback`` (that json
    encoding; a caller passes its own encoder to add a ``default``), which raises what json raises."""
    try:
        if _spelled_alike(value):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (TypeError, RecursionError):  # orjson.JSONEncodeError: ints beyond 64 bits, deep nesting
        pass
    return fallback(value)


def _non_finite(text: str) -> bool:
    """Whether json's ``text`` may hold a NaN or Infinity (or a string holding those words)."""
    return "NaN" in text or "Infinity" in text


def _cacheable_canonical(value: Any) -> tuple[str, str | None]:
    """``canonical_json(value)``, and the same text when it may be kept as a ``RedactedJson.canonical``
    (None when json encoded it and it may show a NaN or Infinity: orjson's text never does, and the
    content hash relies on kept texts holding none). Raises what json raises."""
    fell_back = False

    def fallback(item: Any) -> str:
        nonlocal fell_back
        fell_back = True
        return _CANONICAL_ENCODER.encode(item)

    text = canonical_json(value, fallback)
    return text, (None if fell_back and _non_finite(text) else text)


# --------------------------------------------------------------------------- already redacted


class RedactedJson(dict[str, Any]):
    """A JSON object already redacted: :func:`redact` returns it as it is instead of walking it again.

    Constructing one redacts its content (``RedactedJson(m)`` is ``redact(m)``), so no caller can make
    one that skips redaction; :func:`redacted_dumps` makes them without the walk where a model's schema
    proves it unnecessary. It refuses writes, so nothing is added after the redaction (its values are
    plain JSON and are not to be changed either: they are shared by whoever retains it, and
    ``canonical`` was made from them).

    ``canonical``, when known, is its canonical JSON (``json.dumps(self, sort_keys=True,
    separators=(",", ":"))``), which a content hash can use instead of encoding it again. It is never
    set to a text showing a NaN or Infinity (such objects are left for the hash to encode), so the hash
    need not look for them in it."""

    __slots__ = ("canonical",)
    canonical: str | None

    def __init__(self, content: Mapping[str, Any] | None = None, /) -> None:
        super().__init__(redact(dict(content or {})))
        self.canonical = None

    @classmethod
    def encoded(cls, content: Mapping[str, Any]) -> Self:
        """``RedactedJson(content)`` with its ``canonical`` set when json can encode it (without a
        ``default``): for one object retained in many memories, encoded once instead of per memory."""
        made = cls(content)
        # What json refuses is left unencoded, to whoever encodes it with their own default.
        with contextlib.suppress(TypeError, ValueError, RecursionError):
            made.canonical = _cacheable_canonical(dict(made))[1]  # dict: the type the fast path takes
        return made

    @classmethod
    def _trusted(cls, content: dict[str, Any], canonical: str | None = None) -> Self:
        made = dict.__new__(cls)
        dict.update(made, content)
        made.canonical = canonical
        return made

    def _read_only(self, *_: object, **__: object) -> NoReturn:
        raise TypeError("RedactedJson is read-only: build a new one")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self._trusted(copy.deepcopy(dict(self), memo), self.canonical)

    def __reduce__(self) -> tuple[type[Self], tuple[dict[str, Any]]]:
        return type(self), (dict(self),)


# What a model's schema proves about its dump: the paths (by dumped key) to its str-keyed dict fields
# (their keys are data, checked per dump) and to its fields of sensitive names (their values replaced);
# None when it proves nothing (Any, custom serializers, extra fields, such fields inside lists...).
_Paths = tuple[tuple[str, ...], ...]
_Plan = tuple[_Paths, _Paths]
_PLANS: dict[type[BaseModel], _Plan | None] = {}
_PLAIN: frozenset[Any] = frozenset({str, int, float, bool, type(None), datetime, date})
_NOTHING: _Plan = ((), ())


def _plan(cls: type[BaseModel]) -> _Plan | None:
    if cls not in _PLANS:
        _PLANS[cls] = None  # a model that contains itself is not certified
        _PLANS[cls] = _model_plan(cls)
    return _PLANS[cls]


def _model_plan(cls: type[BaseModel]) -> _Plan | None:
    decorators = cls.__pydantic_decorators__
    if (
        cls.model_computed_fields
        or decorators.model_serializers
        or decorators.field_serializers
        or cls.model_config.get("extra") == "allow"
    ):
        return None
    dynamic: list[tuple[str, ...]] = []
    hidden: list[tuple[str, ...]] = []
    for name, info in cls.model_fields.items():
        key = info.serialization_alias or info.alias or name
        if _sensitive(key):
            hidden.append((key,))
            continue
        sub = _annotation_plan(info.annotation)
        if sub is None:
            return None
        dynamic.extend((key, *p) for p in sub[0])
        hidden.extend((key, *p) for p in sub[1])
    return tuple(dynamic), tuple(hidden)


def _annotation_plan(tp: Any) -> _Plan | None:
    if tp in _PLAIN or (isinstance(tp, type) and issubclass(tp, Enum)):
        return _NOTHING
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _plan(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return _NOTHING
    if origin is typing.Annotated:
        return _annotation_plan(args[0])
    if origin in (typing.Union, types.UnionType):
        subs = [_annotation_plan(a) for a in args]
        if any(sub is None for sub in subs):
            return None
        return (
            tuple(p for sub in subs if sub for p in sub[0]),
            tuple(p for sub in subs if sub for p in sub[1]),
        )
    if origin in (list, tuple):
        # Paths through a list would need one per element: only lists of what needs no path.
        ok = all(_annotation_plan(a) == _NOTHING for a in args if a is not Ellipsis)
        return _NOTHING if ok else None
    if origin is dict and len(args) == 2 and args[0] is str and args[1] in _PLAIN:
        return ((),), ()  # the dict's own keys are data
    return None


def _node(dumped: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = dumped
    for key in path:
        node = node.get(key) if type(node) is dict else None
    return node


# Key sets of str-keyed dict fields already found clean: a model's metrics dict has the same keys in
# every dump, and checking them as one tuple costs a hash instead of a lookup per key.
_CLEAN_KEY_SETS: set[tuple[Any, ...]] = set()


def _any_sensitive_key(node: dict[Any, Any]) -> bool:
    keys = tuple(node)
    if keys in _CLEAN_KEY_SETS:
        return False
    if any(map(_sensitive, keys)):
        return True
    if len(_CLEAN_KEY_SETS) < _KEY_CACHE_MAX:
        _CLEAN_KEY_SETS.add(keys)
    return False


def redacted_dumps(models: Mapping[str, BaseModel]) -> RedactedJson:
    """``{key: model.model_dump(mode="json", by_alias=True)}`` redacted, as :func:`redact` would.

    The walk is skipped when it provably changes nothing: every key the models' schemas name is not
    sensitive (checked once per model class), the keys of their str-keyed dict fields are not either
    (checked per dump), and no string holds what :func:`redact_text` looks for (its first check's
    substrings are nowhere in the dump's canonical JSON, kept for the content hash: ASCII letters are
    never escaped, so a string holding one shows it). Anything else is redacted by the walk."""
    dumped = {key: model.model_dump(mode="json", by_alias=True) for key, model in models.items()}
    for key, model in models.items():
        plan = _plan(type(model))
        if plan is None or _sensitive(key):
            return RedactedJson(dumped)
        dynamic, hidden = plan
        for path in dynamic:
            node = _node(dumped[key], path)
            if type(node) is dict and node and _any_sensitive_key(node):
                return RedactedJson(dumped)
        for path in hidden:
            parent = _node(dumped[key], path[:-1])
            if type(parent) is dict and path[-1] in parent:
                parent[path[-1]] = REDACTED  # the dump is ours: replaced in place
    try:
        canonical, kept = _cacheable_canonical(dumped)
    except (TypeError, ValueError):
        return RedactedJson(dumped)
    if "jaxk_" in canonical or "bearer" in canonical.lower():
        return RedactedJson(dumped)
    return RedactedJson._trusted(dumped, kept)
