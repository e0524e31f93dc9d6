"""SIMULATED sample market: 20 fictional ``*.SIM`` symbols generated in code. NOT REAL MARKET DATA.

The sample lets the assistant run (demos, tutorials, tests) without any data file. Every price, volume,
earnings date and sector here is made up by a seeded random generator; the provider says so with
``simulated = True`` and every ticker ends in ``.SIM`` so that a simulated symbol can never be mistaken
for a real one in an output.

What it looks like:

* ~3 years of business-day bars (Mon-Fri minus US-style fixed holidays) ending on the fixed session
  :data:`SAMPLE_LAST_SESSION` (Friday 2025-06-27), so every run and every test is reproducible;
* a geometric random walk per symbol (market + sector + own noise, per-symbol drift and volatility),
  rescaled into 10..500 USD and rounded to cents; intraday ranges; log-normal volumes with spikes;
* quarterly earnings (reported before the open, so the report date is the reaction day: a gap and a
  volume surge), occasional gaps without news;
* a deliberately busy last session: five symbols report earnings with 4-9 % gaps (up and down) on 3-6x
  volume, three more have volume spikes without news, two have a volatility spike (true range about
  4-5x ATR14), and five show indicator setups (RSI(14) back above 30 / below 70, MACD crossing its
  signal both ways, SMA20 crossing above SMA50). The generator checks these on its own output.

The same ``seed`` gives byte-identical arrays (``np.random.default_rng(seed)``, fixed draw order).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np

from jax_assistant.marketdata.base import (
    BarSeries,
    DataIssue,
    DateArray,
    EarningsReport,
    FloatArray,
    UnknownSymbolError,
)
from jax_assistant.marketdata.validation import clean_series

__all__ = [
    "SAMPLE_LAST_SESSION",
    "SAMPLE_SESSIONS",
    "SAMPLE_UNIVERSE",
    "SampleProvider",
    "SimSymbol",
]

SAMPLE_LAST_SESSION = date(2025, 6, 27)  # a Friday; fixed so that runs are reproducible
SAMPLE_SESSIONS = 756  # three years of ~252 sessions
_EARNINGS_EVERY = 63  # sessions per quarter
_QUIET_TAIL = 25  # no random events this close to the last session: keeps its 20-day baselines clean


@dataclass(frozen=True)
class SimSymbol:
    """A fictional company of the simulated market and what it does on the last session."""

    symbol: str
    name: str
    sector: str
    role: str


SAMPLE_UNIVERSE: tuple[SimSymbol, ...] = (
    SimSymbol("ACME.SIM", "Acme Industrial Works (simulated)", "Industrials", "earnings_up"),
    SimSymbol("BOLT.SIM", "Bolt Fasteners (simulated)", "Industrials", "macd_up"),
    SimSymbol("GEAR.SIM", "Gearhouse Machinery (simulated)", "Industrials", "volume"),
    SimSymbol("BYTE.SIM", "Bytewise Systems (simulated)", "Information Technology", "earnings_down"),
    SimSymbol("QBIT.SIM", "Qubit Labs (simulated)", "Information Technology", "volatility"),
    SimSymbol("NIMB.SIM", "Nimbus Cloud (simulated)", "Information Technology", "rsi_down"),
    SimSymbol("CURA.SIM", "Curative Health (simulated)", "Health Care", "earnings_up"),
    SimSymbol("GENE.SIM", "Genesight Bio (simulated)", "Health Care", "rsi_up"),
    SimSymbol("MEDX.SIM", "Medexa Devices (simulated)", "Health Care", "quiet"),
    SimSymbol("VALT.SIM", "Vaultline Bank (simulated)", "Financials", "volume"),
    SimSymbol("LEDG.SIM", "Ledger Trust (simulated)", "Financials", "quiet"),
    SimSymbol("MINT.SIM", "Mint Payments (simulated)", "Financials", "quiet"),
    SimSymbol("FLUX.SIM", "Flux Energy (simulated)", "Energy", "earnings_down"),
    SimSymbol("DRIL.SIM", "Drillstone Oil (simulated)", "Energy", "volatility"),
    SimSymbol("ZEST.SIM", "Zest Apparel (simulated)", "Consumer Discretionary", "earnings_up"),
    SimSymbol("ROAM.SIM", "Roam Travel (simulated)", "Consumer Discretionary", "macd_down"),
    SimSymbol("PANT.SIM", "Pantry Foods (simulated)", "Consumer Staples", "volume"),
    SimSymbol("BREW.SIM", "Brewhouse Beverages (simulated)", "Consumer Staples", "quiet"),
    SimSymbol("VOLT.SIM", "Voltline Power (simulated)", "Utilities", "sma_up"),
    SimSymbol("TIDE.SIM", "Tidewater Utilities (simulated)", "Utilities", "quiet"),
)


# --------------------------------------------------------------------------- calendar


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> np.datetime64:
    """The n-th (1-based) weekday (0=Mon) of a month; n=-1 is the last one."""
    mask = "".join("1" if d == weekday else "0" for d in range(7))
    if n > 0:
        first = np.datetime64(f"{year:04d}-{month:02d}-01")
        return np.busday_offset(first, n - 1, roll="forward", weekmask=mask)
    month_end = np.datetime64(f"{year:04d}-{month:02d}", "M") + 1 - np.timedelta64(1, "D")
    return np.busday_offset(month_end, 0, roll="backward", weekmask=mask)


def _holidays(years: range) -> list[np.datetime64]:
    """US-exchange-like fixed holidays (no Good Friday: it needs Easter, and a sample does not)."""
    out: list[np.datetime64] = []
    for y in years:
        out += [np.datetime64(f"{y}-01-01"), np.datetime64(f"{y}-06-19"), np.datetime64(f"{y}-07-04")]
        out += [np.datetime64(f"{y}-12-25")]
        out += [_nth_weekday(y, 1, 0, 3), _nth_weekday(y, 2, 0, 3), _nth_weekday(y, 5, 0, -1)]
        out += [_nth_weekday(y, 9, 0, 1), _nth_weekday(y, 11, 3, 4)]
    return out


def _calendar() -> np.busdaycalendar:
    last = SAMPLE_LAST_SESSION.year
    return np.busdaycalendar(holidays=_holidays(range(last - 4, last + 2)))


def _sessions(cal: np.busdaycalendar) -> DateArray:
    end = np.datetime64(SAMPLE_LAST_SESSION, "D")
    offsets = np.arange(-(SAMPLE_SESSIONS - 1), 1)
    return np.busday_offset(end, offsets, roll="backward", busdaycal=cal)


# --------------------------------------------------------------------------- indicators (to steer the tail)


def _rsi(close: FloatArray, period: int = 14) -> FloatArray:
    """Wilder's RSI (seeded with the simple mean of the first ``period`` changes)."""
    delta = np.diff(close)
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    out = np.full(close.shape, np.nan)
    ag, al = gain[:period].mean(), loss[:period].mean()
    for t in range(period, len(close)):
        if t > period:
            ag = (ag * (period - 1) + gain[t - 1]) / period
            al = (al * (period - 1) + loss[t - 1]) / period
        out[t] = 100.0 if al == 0 else 100.0 - 100.0 / (1.0 + ag / al)
    return out


def _ema(x: FloatArray, span: int) -> FloatArray:
    alpha = 2.0 / (span + 1)
    out = np.empty_like(x)
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def _macd_hist(close: FloatArray) -> FloatArray:
    macd = _ema(close, 12) - _ema(close, 26)
    return macd - _ema(macd, 9)


def _sma_gap(close: FloatArray) -> FloatArray:
    """SMA20 - SMA50 (NaN for the first 49 sessions)."""
    c = np.concatenate(([0.0], np.cumsum(close)))
    out = np.full(close.shape, np.nan)
    t = np.arange(49, len(close))
    out[t] = (c[t + 1] - c[t - 19]) / 20 - (c[t + 1] - c[t - 49]) / 50
    return out


def _atr(high: FloatArray, low: FloatArray, close: FloatArray, period: int = 14) -> FloatArray:
    tr = _true_range(high, low, close)
    out = np.full(close.shape, np.nan)
    out[period] = tr[1 : period + 1].mean()
    for t in range(period + 1, len(close)):
        out[t] = (out[t - 1] * (period - 1) + tr[t]) / period
    return out


def _true_range(high: FloatArray, low: FloatArray, close: FloatArray) -> FloatArray:
    prev = np.concatenate(([close[0]], close[:-1]))
    return np.maximum(high, prev) - np.minimum(low, prev)


def _bisect(f: Callable[[float], float], lo: float, hi: float, target: float) -> float:
    """x in [lo, hi] with f(x) == target for an increasing f."""
    if not f(lo) <= target <= f(hi):
        raise RuntimeError(f"sample generator: target {target:.4g} not within [{f(lo):.4g}, {f(hi):.4g}]")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


# --------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class _Market:
    series: dict[str, BarSeries]
    earnings: dict[str, list[date]]


def _closes(gap: FloatArray, move: FloatArray) -> FloatArray:
    return np.exp(np.cumsum(gap + move))


@dataclass(frozen=True)
class _Setup:
    """How to make one indicator cross a level on the last session."""

    indicator: Callable[[FloatArray], FloatArray]
    level: float
    bullish: bool
    per_price: bool  # MACD histogram and SMA gap are in price units: compare them as fractions of price
    # Tail shapes to try, in order: (sessions of the fixed counter-trend, sessions of the solved trend,
    # last session's move).
    shapes: tuple[tuple[int, int, float], ...]


_MACD_SHAPES = ((45, 8, 0.012), (45, 5, 0.015), (40, 12, 0.02), (45, 8, 0.025))
_SETUPS: dict[str, _Setup] = {
    # RSI needs a plain run of losses (gains) and one strong session against it.
    "rsi_up": _Setup(_rsi, 30.0, True, False, ((0, 20, 0.025), (0, 14, 0.035), (0, 30, 0.03))),
    "rsi_down": _Setup(_rsi, 70.0, False, False, ((0, 20, 0.025), (0, 14, 0.035), (0, 30, 0.03))),
    # A MACD histogram flattens to 0 in a steady trend: a long decline (rise) whose last sessions are
    # solved to sit the histogram just below (above) 0, then one session against the trend.
    "macd_up": _Setup(_macd_hist, 0.0, True, True, _MACD_SHAPES),
    "macd_down": _Setup(_macd_hist, 0.0, False, True, _MACD_SHAPES),
    # SMA20 crosses SMA50 when a trend turns: a fixed decline, then the solved recovery.
    "sma_up": _Setup(_sma_gap, 0.0, True, True, ((30, 12, 0.01), (35, 15, 0.012), (25, 10, 0.015))),
}
_COUNTER_TREND = 0.005  # per session, for the fixed leg of the MACD/SMA shapes
_STEERED_TAIL = 55  # sessions before the last one that _steer may reshape


def _shaped(natural: FloatArray, sign: float, shape: tuple[int, int, float], a: float) -> FloatArray:
    """``natural`` moves with a fixed counter-trend leg, a trend leg of slope ``a`` and a fixed last move."""
    counter, trend, last_move = shape
    last = len(natural) - 1
    m = natural.copy()
    m[last - trend - counter : last - trend] -= sign * _COUNTER_TREND
    m[last - trend : last] += sign * a
    m[last] = sign * last_move
    return m


def _steer(role: str, gap: FloatArray, move: FloatArray) -> None:
    """Shape the tail of an indicator-setup symbol so that its setup fires on the last session.

    The last session's move is fixed (up for a bullish setup); the slope ``a`` of the sessions before
    it is solved by bisection so that the indicator's mean over the last two sessions sits exactly on
    the level. Since the fixed last move pushes the indicator across, it is then on the wrong side the
    session before and on the right side on the last one (checked; otherwise the next shape is tried).
    """
    setup = _SETUPS[role]
    sign = 1.0 if setup.bullish else -1.0
    natural = move.copy()
    # Calm the random walk over the indicators' memory (SMA50, EMA26+9, Wilder's 14) so that the shape,
    # not the chance trend of the seed, decides where the indicator stands.
    calm = slice(len(move) - 1 - _STEERED_TAIL, len(move) - 1)
    natural[calm] = 0.5 * (natural[calm] - natural[calm].mean())
    gap[calm] = 0.5 * (gap[calm] - gap[calm].mean())
    # The last few sessions move the indicators most: keep chance there from outweighing the shape.
    natural[-6:-1] *= 0.3
    gap[-6:-1] *= 0.3

    def side(shape: tuple[int, int, float], a: float) -> tuple[float, float]:
        """How far the indicator is beyond the level (session before, last session), setup direction > 0."""
        close = _closes(gap, _shaped(natural, sign, shape, a))
        v = setup.indicator(close)[-2:]
        if setup.per_price:
            v = v / close[-2]
        return sign * (float(v[0]) - setup.level), sign * (float(v[1]) - setup.level)

    for shape in setup.shapes:

        def total(a: float, shape: tuple[int, int, float] = shape) -> float:
            return sum(side(shape, a))

        try:
            a = _bisect(total, -0.03, 0.03, 0.0)
        except RuntimeError:
            continue
        before, after = side(shape, a)
        # Demand a margin on both sides, so that rounding to cents cannot undo the crossing.
        margin = 1e-4 if setup.per_price else 1.0
        if before < -margin and after > margin:
            move[:] = _shaped(natural, sign, shape, a)
            return
    raise RuntimeError(f"sample generator: could not shape a {role} setup")


def _generate_symbol(
    rng: np.random.Generator,
    spec: SimSymbol,
    market: FloatArray,
    sector: FloatArray,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, list[int]]:
    n = SAMPLE_SESSIONS
    last = n - 1
    sd = rng.uniform(0.18, 0.5) / np.sqrt(252)  # daily volatility
    beta = rng.uniform(0.6, 1.4)
    drift = rng.uniform(-0.05, 0.25) / 252
    base_volume = np.exp(rng.uniform(np.log(4e5), np.log(2.5e7)))
    level = np.exp(rng.uniform(np.log(20), np.log(300)))

    common = beta * market + sector
    own_sd = np.sqrt(max(sd**2 - float(np.var(common)), (0.5 * sd) ** 2))
    ret = drift + common + own_sd * rng.standard_t(5, n) / np.sqrt(5 / 3)  # t(5) scaled to unit variance
    gap = rng.normal(0.0, 0.25 * sd, n)  # overnight part of each day's move
    move = ret - gap  # intraday part
    range_mult = np.ones(n)
    vol_mult = np.ones(n)

    # Quarterly earnings. Reporters of the last session are phased onto it; the others last reported
    # 25-57 sessions before it (outside the 20-session baselines), so their next report is still ahead.
    if spec.role.startswith("earnings"):
        phase = last % _EARNINGS_EVERY
    elif spec.role in _SETUPS:
        # Report just before the reshaped tail, so the next report is due a few sessions after the end.
        phase = (last - int(rng.integers(_STEERED_TAIL + 3, _STEERED_TAIL + 7))) % _EARNINGS_EVERY
    else:
        phase = (last - int(rng.integers(_QUIET_TAIL + 2, 56))) % _EARNINGS_EVERY
    # Real companies do not report on the exact same weekday each quarter: jitter by up to 2 sessions.
    earnings = [
        e if e == last else max(1, e + int(rng.integers(-2, 3))) for e in range(phase, n, _EARNINGS_EVERY)
    ]
    for e in earnings:
        if e == last:
            continue  # the last session is shaped by the role below
        sign = 1.0 if rng.random() < 0.55 else -1.0
        gap[e] += np.log1p(sign * rng.uniform(0.02, 0.09))
        range_mult[e] *= rng.uniform(1.5, 2.5)
        vol_mult[e] *= rng.uniform(2.5, 5.0)
        vol_mult[e + 1] *= 1.5  # the day after a report stays busy
    # Occasional gaps without news and volume spikes, never in the quiet tail.
    body = np.arange(1, last - _QUIET_TAIL)
    for t in body[rng.random(body.size) < 0.006]:
        gap[t] += np.log1p((1 if rng.random() < 0.5 else -1) * rng.uniform(0.02, 0.05))
        vol_mult[t] *= rng.uniform(1.5, 3.0)
    for t in body[rng.random(body.size) < 0.015]:
        vol_mult[t] *= rng.uniform(2.0, 4.0)

    # The last session, by role.
    role = spec.role
    last_volume = rng.uniform(0.8, 1.3)
    gap[last] = float(np.clip(rng.normal(0, 0.2 * sd), -0.006, 0.006))
    move[last] = float(np.clip(rng.normal(0, 0.6 * sd), -0.012, 0.012))
    if role.startswith("earnings"):
        sign = 1.0 if role == "earnings_up" else -1.0
        gap[last] = np.log1p(sign * rng.uniform(0.045, 0.085))
        move[last] = sign * rng.uniform(-0.004, 0.012)
        range_mult[last] = 1.5
        last_volume = rng.uniform(3.6, 5.2)
    elif role == "volume":
        move[last] = (1 if rng.random() < 0.5 else -1) * rng.uniform(0.005, 0.02)
        last_volume = rng.uniform(3.6, 5.0)
    elif role == "volatility":
        move[last] = -rng.uniform(0.02, 0.035)
        last_volume = rng.uniform(1.8, 2.6)
    elif role != "quiet":
        _steer(role, gap, move)
        last_volume = rng.uniform(1.0, 1.6)

    close = _closes(gap, move)
    open_ = close * np.exp(-move)
    wick = 0.5 * sd * range_mult
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 1, n)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 1, n)) * wick)
    if role == "volatility":
        # A wide-range session: stretch the last bar to 4-5x the ATR14 of the day before.
        atr = _atr(high, low, close)[last - 1]
        span_lo = min(low[last], close[last - 1])
        span_hi = max(high[last], close[last - 1])
        extra = max(rng.uniform(4.0, 5.0) * atr - (span_hi - span_lo), 0.0)
        high[last] = span_hi + 0.35 * extra
        low[last] = span_lo - 0.65 * extra

    # Rescale into 10..500 USD around the symbol's level, then round to cents as a feed would.
    scale = level / float(np.median(close))
    scale = min(max(scale, 10.5 / float(low.min())), 495.0 / float(high.max()))
    o, h, lo, c = (np.round(a * scale, 2) for a in (open_, high, low, close))
    h, lo = np.maximum.reduce([h, o, c]), np.minimum.reduce([lo, o, c])

    strength = 1.0 + 0.35 * np.minimum(np.abs(gap + move) / sd, 4.0)  # busier on big moves
    volume = base_volume * np.exp(rng.normal(0.0, 0.28, n)) * strength * vol_mult
    volume[last] = last_volume * volume[last - 20 : last].mean()
    volume = np.maximum(np.round(volume), 100.0)
    return o, h, lo, c, volume, earnings


@lru_cache(maxsize=4)
def _build_market(seed: int) -> _Market:
    rng = np.random.default_rng(seed)
    cal = _calendar()
    sessions = _sessions(cal)
    n = SAMPLE_SESSIONS
    market = rng.normal(0.0003, 0.009, n)  # about 14 % a year
    sectors = sorted({s.sector for s in SAMPLE_UNIVERSE})
    sector_moves = {name: rng.normal(0.0, 0.005, n) for name in sectors}

    series: dict[str, BarSeries] = {}
    earnings: dict[str, list[date]] = {}
    for spec in SAMPLE_UNIVERSE:
        o, h, lo, c, v, report_idx = _generate_symbol(rng, spec, market, sector_moves[spec.sector])
        s = clean_series(spec.symbol, sessions, o, h, lo, c, v)
        if s.issues or len(s) != n:  # the generator must produce clean data; fail loudly if not
            raise RuntimeError(f"sample generator produced bad bars for {spec.symbol}: {s.issues[:3]}")
        series[spec.symbol] = s
        # Report dates are the reaction sessions; the next, upcoming report is listed too.
        upcoming = np.busday_offset(sessions[report_idx[-1]], _EARNINGS_EVERY, busdaycal=cal)
        earnings[spec.symbol] = [s.date_at(i) for i in report_idx] + [upcoming.astype(object)]
    _check_last_session(series, earnings)
    return _Market(series, earnings)


def _check_last_session(series: dict[str, BarSeries], earnings: dict[str, list[date]]) -> None:
    """Verify the promised last-session activity on the final (rounded) bars."""
    failures: list[str] = []
    for spec in SAMPLE_UNIVERSE:
        s = series[spec.symbol]
        c = s.close
        role = spec.role
        volume_ratio = s.volume[-1] / s.volume[-21:-1].mean()
        if role.startswith("earnings"):
            gap = s.open[-1] / c[-2] - 1
            ok = SAMPLE_LAST_SESSION in earnings[spec.symbol] and 0.04 <= abs(gap) <= 0.09
            ok = ok and 3 <= volume_ratio <= 6 and (gap > 0) == (role == "earnings_up")
        elif role == "volume":
            ok = volume_ratio > 3
        elif role == "volatility":
            ok = _true_range(s.high, s.low, c)[-1] > 2.5 * _atr(s.high, s.low, c)[-1]
        elif role in ("rsi_up", "rsi_down"):
            r = _rsi(c)
            ok = r[-2] < 30 <= r[-1] if role == "rsi_up" else r[-2] > 70 >= r[-1]
        elif role in ("macd_up", "macd_down"):
            hist = _macd_hist(c)
            ok = hist[-2] < 0 < hist[-1] if role == "macd_up" else hist[-2] > 0 > hist[-1]
        elif role == "sma_up":
            g = _sma_gap(c)
            ok = g[-2] < 0 < g[-1]
        else:
            ok = True
        if not ok:
            failures.append(f"{spec.symbol} ({role})")
    if failures:
        raise RuntimeError(f"sample generator: last-session setups missing for {', '.join(failures)}")


# --------------------------------------------------------------------------- provider


class SampleProvider:
    """The bundled SIMULATED market (``simulated = True``; tickers end in ``.SIM``). Not real data."""

    name = "sample"
    simulated = True

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self._market = _build_market(seed)
        self._sectors = {s.symbol: s.sector for s in SAMPLE_UNIVERSE}

    def symbols(self) -> list[str]:
        return sorted(self._market.series)

    def latest_date(self) -> date:
        return SAMPLE_LAST_SESSION

    def bars(self, symbol: str, as_of: date | None = None) -> BarSeries:
        series = self._market.series.get(self._key(symbol))
        if series is None:
            raise self._unknown(symbol)
        return series if as_of is None else series.upto(as_of)

    def earnings_dates(self, symbol: str) -> list[date]:
        return list(self._market.earnings.get(self._key(symbol), ()))

    def earnings_reports(self, symbol: str) -> list[EarningsReport]:
        # The generator puts the reaction on the report date: reported before the open.
        return [EarningsReport(date=d, release_time="pre") for d in self.earnings_dates(symbol)]

    def sector(self, symbol: str) -> str | None:
        return self._sectors.get(self._key(symbol))

    def issues(self, symbol: str | None = None) -> list[DataIssue]:
        if symbol is not None and self._key(symbol) not in self._market.series:
            raise self._unknown(symbol)
        return []  # generated clean (checked by clean_series at build time)

    def company_name(self, symbol: str) -> str | None:
        key = self._key(symbol)
        return next((s.name for s in SAMPLE_UNIVERSE if s.symbol == key), None)

    @staticmethod
    def _key(symbol: str) -> str:
        return symbol.strip().upper()

    def _unknown(self, symbol: str) -> UnknownSymbolError:
        key = self._key(symbol)
        close = difflib.get_close_matches(key, self.symbols(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "the simulated sample has only *.SIM symbols"
        return UnknownSymbolError(key, hint)

    def __repr__(self) -> str:
        return f"SampleProvider(seed={self.seed}, simulated=True, last_session={SAMPLE_LAST_SESSION})"
