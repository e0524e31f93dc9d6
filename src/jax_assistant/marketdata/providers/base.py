"""What every live vendor adapter shares: the fetched-bars shape, the errors, and the HTTP call.

Every HTTP request an adapter makes (each page counts) goes through :meth:`VendorHttp.get`:

1. one grant from the vendor's :class:`RateLimiter` (the engine's limiter, never a private one), so the
   vendor's "N per minute" holds over any window, across symbols and pages;
2. the request, with the key in the header or query parameter the vendor documents;
3. 429 and 5xx, timeouts and dropped connections become :class:`TransientError` (with the server's
   ``Retry-After``) and are retried by ``call_with_retry``; 401/403 and exhausted retries become
   :class:`VendorUnavailableError`, which makes a provider chain move to the next vendor.

Keys never reach a log line or an error message: URLs are shown with sensitive query parameters
replaced (``observability.redaction``), and headers are never shown.
"""

from __future__ import annotations

import collections
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import httpx

from jax_assistant.domain.errors import UnavailableError
from jax_assistant.marketdata.base import MarketDataError
from jax_assistant.observability.logging import get_logger
from jax_assistant.observability.redaction import REDACTED, is_sensitive_key
from jax_assistant.pipeline.base import TransientError
from jax_assistant.pipeline.policy import RetryPolicy
from jax_assistant.pipeline.resilience import Clock, RateLimiter, SystemClock, call_with_retry, retry_after_of

log = get_logger("jax_assistant.marketdata.providers")

# US equity sessions are dated in exchange time: a daily bar stamped 05:00 UTC is that day's session.
EXCHANGE_TZ = ZoneInfo("America/New_York")


class Candle(NamedTuple):
    """One daily bar as a vendor sent it (validated later by ``clean_series``, like file data)."""

    date: date
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True)
class VendorBars:
    """Bars of one symbol from one vendor; ``adjustment`` names the price basis (cache key part)."""

    source: str
    symbol: str
    adjustment: str
    candles: list[Candle] = field(default_factory=list)


class VendorUnavailableError(UnavailableError):
    """The vendor cannot serve right now (down, throttling past our retries, auth refused)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class VendorResponseError(MarketDataError):
    """The vendor answered with something that is not its documented shape (garbage, oversized)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}", source=source)


@runtime_checkable
class BarSource(Protocol):
    """A live vendor of daily bars."""

    name: str
    adjustment: str

    async def fetch_daily(self, symbol: str, start: date, end: date) -> VendorBars:
        """Bars with ``start <= date <= end``, ascending. Raises UnknownSymbolError, VendorUnavailableError,
        VendorResponseError."""
        ...

    async def aclose(self) -> None: ...


def safe_url(url: str | httpx.URL) -> str:
    """``url`` with every sensitive query value (``apiKey``, ``token``...) replaced: safe to log."""
    parts = urlsplit(str(url))
    if not parts.query:
        return str(url)
    query = [
        (k, REDACTED if is_sensitive_key(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]")))


def exchange_date_from_ms(ms: float) -> date:
    return datetime.fromtimestamp(ms / 1000.0, tz=EXCHANGE_TZ).date()


def exchange_date_from_text(text: str) -> date:
    """An RFC 3339 timestamp (``2024-01-02T05:00:00Z``) or a plain ``2024-01-02`` as a session date."""
    value = text.strip()
    if len(value) == 10:
        return date.fromisoformat(value)
    stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return stamp.date() if stamp.tzinfo is None else stamp.astimezone(EXCHANGE_TZ).date()


class _RedactUrls(logging.Filter):
    """Rewrites URLs in httpx's own log records ("HTTP Request: GET <url> ..."), which would otherwise
    print a query-string key such as Polygon's ``apiKey`` at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(safe_url(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_URL_FILTER = _RedactUrls()


def guard_httpx_logging() -> None:
    """Install the URL redaction on the ``httpx`` logger (idempotent)."""
    logger = logging.getLogger("httpx")
    if _URL_FILTER not in logger.filters:
        logger.addFilter(_URL_FILTER)


@dataclass(frozen=True)
class VendorResponse:
    status: int
    body: Any  # parsed JSON


class VendorHttp:
    """The rate-limited, retried, size-capped JSON GET every HTTP adapter uses."""

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        limiter: RateLimiter,
        retry: RetryPolicy,
        timeout_s: float,
        max_body_bytes: int,
        headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        guard_httpx_logging()
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.retry = retry
        self.max_body_bytes = max_body_bytes
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.requests = 0  # HTTP requests sent (every attempt of every page)
        # When the most recent requests were sent (clock time): what the rate limit is judged on.
        self.sent_at: collections.deque[float] = collections.deque(maxlen=1000)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,  # a redirect could carry our key to another host
        )

    def same_origin(self, url: str) -> bool:
        """True if ``url`` (e.g. a vendor's ``next_url``) points at our base URL's scheme and host."""
        a, b = urlsplit(url), urlsplit(self.base_url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    async def get(self, url: str, params: Mapping[str, Any] | None = None) -> VendorResponse:
        """GET ``url`` (a path or an absolute URL on the base origin) and parse the JSON body.

        Returns 2xx and the 4xx answers an adapter interprets (404, 400, 422) with their body; raises
        VendorUnavailableError for auth failures and exhausted retries, VendorResponseError for bodies
        that are not JSON or exceed ``max_body_bytes``.
        """
        if url.startswith(("http://", "https://")) and not self.same_origin(url):
            raise VendorResponseError(
                self.source, f"refusing to follow a link off {self.base_url}: {safe_url(url)}"
            )

        async def once() -> VendorResponse:
            await self.limiter.acquire()
            self.requests += 1
            self.sent_at.append(self.clock.monotonic())
            return await self._send(url, params)

        try:
            response, attempts = await call_with_retry(
                once, self.retry, clock=self.clock, rng=self.rng, on_retry=self._log_retry
            )
        except TransientError as exc:
            attempts = getattr(exc, "attempts", 1)
            raise VendorUnavailableError(self.source, f"{exc} (gave up after {attempts} attempt(s))") from exc
        return response

    def _log_retry(self, attempt: int, exc: Exception, delay: float) -> None:
        log.info(
            "vendor call failed; retrying",
            source=self.source,
            attempt=attempt,
            delay_s=round(delay, 3),
            error=str(exc),
        )

    async def _send(self, url: str, params: Mapping[str, Any] | None) -> VendorResponse:
        target = httpx.URL(url)
        if params:
            # Merged by hand: httpx replaces a URL's own query (a next_url cursor) with ``params``.
            target = target.copy_merge_params(dict(params))
        try:
            async with self._client.stream("GET", target) as resp:
                shown = safe_url(resp.request.url)
                status = resp.status_code
                if status == 429 or status >= 500:
                    error = httpx.HTTPStatusError(f"HTTP {status}", request=resp.request, response=resp)
                    raise TransientError(f"HTTP {status} from {shown}", retry_after=retry_after_of(error))
                if status in (401, 403):
                    raise VendorUnavailableError(
                        self.source,
                        f"HTTP {status} from {shown}: key refused (check [marketdata.{self.source}])",
                    )
                body = await self._read_capped(resp, shown)
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out: {safe_url(exc.request.url)}") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        if not body.strip():
            parsed: Any = None
        else:
            try:
                parsed = json.loads(body)
            except ValueError:
                raise VendorResponseError(
                    self.source, f"HTTP {status} from {shown}: the body is not JSON"
                ) from None
        if status >= 300 and status not in (400, 404, 422):
            raise VendorResponseError(self.source, f"unexpected HTTP {status} from {shown}")
        return VendorResponse(status, parsed)

    async def _read_capped(self, resp: httpx.Response, shown: str) -> bytes:
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise VendorResponseError(
                self.source, f"{shown}: body of {declared} bytes exceeds {self.max_body_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:  # a missing or lying Content-Length
                raise VendorResponseError(self.source, f"{shown}: body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()


def number(row: Mapping[str, Any], key: str, source: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VendorResponseError(source, f"bar field {key!r} is not a number (got {value!r:.40})")
    return float(value)


SHORT_OHLCV = ("o", "h", "l", "c", "v")  # Polygon, Alpaca
LONG_OHLCV = ("open", "high", "low", "close", "volume")  # financialdatasets, the IB bridge


def candles_from(
    body: Mapping[str, Any],
    list_key: str,
    *,
    source: str,
    symbol: str,
    when: Callable[[Mapping[str, Any]], date],
    fields: tuple[str, str, str, str, str],
) -> list[Candle]:
    """The bars a vendor lists under ``list_key`` (null = none), one shape check for every adapter:
    a list of objects with a date (``when`` reads it) and five numeric ``fields`` (o, h, l, c, v)."""
    rows = body.get(list_key) or []
    if not isinstance(rows, list):
        raise VendorResponseError(source, f"{symbol}: {list_key!r} is not a list")
    o, h, lo, c, v = fields
    candles = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise VendorResponseError(source, f"{symbol}: an item of {list_key!r} is not an object")
        candles.append(
            Candle(
                when(row),
                number(row, o, source),
                number(row, h, source),
                number(row, lo, source),
                number(row, c, source),
                number(row, v, source),
            )
        )
    return candles


def text_date(row: Mapping[str, Any], key: str, source: str) -> date:
    """The exchange date of a bar whose time is an ISO text field ``key``."""
    value = row.get(key)
    if not isinstance(value, str):
        raise VendorResponseError(source, f"bar field {key!r} is not a timestamp (got {value!r:.40})")
    return exchange_date_from_text(value)


def error_text(body: Any) -> str:
    """The vendor's own error message from a JSON error body, if it has one."""
    if isinstance(body, Mapping):
        for key in ("error", "message", "detail", "msg"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return ""
