"""A seeded synthetic universe for ``scan_market``: many symbols, clearly not real ones.

Only one HK symbol (09988) and two US symbols have real intraday bars, so the paper exchange
scans a generated universe calibrated on them (``CALIBRATION``, measured from data/samples by
``measure_calibration``): U-shaped intraday volume and volatility, GARCH volatility clustering
by day and by minute, fat-tailed minute returns, overnight gaps, the HK lunch break, prices on
the tick grid, HK board lots, and two or three news events (volume-spike breakouts, breakdowns,
gaps that keep going) every session for the scanner.

Identification (never to be mistaken for a listed security):
* every name starts with ``SYNTH`` and every ``BarSeries`` has ``synthetic=True``;
* HK codes ``99900``-``99999``. HKEX's published allocation plans that could be checked give
  10000-29999 to derivative warrants, 60000-69999 to CBBCs and 80000-89999 to RMB counters
  (so 8xxxx, 89xxx included, is taken); none of them mentions 999xx, the last block HKEX would
  reach. Nothing guarantees a five-digit code stays free, hence ``is_synthetic_symbol``: a live
  broker path should refuse these codes.
* US tickers ``ZQX1``-``ZQX99``: NYSE and Nasdaq common-stock tickers are letters only.

Deterministic for a seed (numpy ``Generator``); another seed gives another universe.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from brokers.base import BAR_COLUMNS
from data.bars import BarSeries
from data.calendar import MarketCalendar, Session
from core.instruments import Market, Symbol, _hk_bands

HK_BOARD_LOTS = (100, 200, 400, 500, 1000, 2000)
SYNTH_HK_FIRST_CODE = 99900
SYNTH_US_PREFIX = "ZQX"
MAX_UNIVERSE_SIZE = 99
HISTORY_SESSIONS = 60
BUCKET_MINUTES = 15


def is_synthetic_symbol(symbol: Symbol) -> bool:
    if symbol.market is Market.HK:
        return symbol.code.isdigit() and int(symbol.code) >= SYNTH_HK_FIRST_CODE
    return symbol.code.startswith(SYNTH_US_PREFIX) and symbol.code[len(SYNTH_US_PREFIX):].isdigit()


def synthetic_symbol(market: Market, index: int) -> Symbol:
    if not 0 <= index < MAX_UNIVERSE_SIZE:
        raise ValueError(f"synthetic symbol index must be 0..{MAX_UNIVERSE_SIZE - 1}, got {index}")
    if market is Market.HK:
        return Symbol(Market.HK, f"{SYNTH_HK_FIRST_CODE + index:05d}")
    return Symbol(Market.US, f"{SYNTH_US_PREFIX}{index + 1}")


# --- Calibration ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """Figures measured on the real sample files (full sessions only)."""

    daily_sigma: float          # std of daily log close-to-close returns since 2019
    gap_share: float            # overnight gap std / daily std
    minute_sigma_per_daily: float  # std of 1-minute log returns / daily std
    volume_u: tuple[float, ...]  # mean share of the day's volume per 15-minute bucket, mean 1
    volatility_u: tuple[float, ...]  # std of 1-minute returns per 15-minute bucket, mean 1


# Measured with measure_calibration() on data/samples: HK from 09988 (2022-05-19..06-15; the first
# bucket holds the volume-0 auction bar, the bucket after lunch the afternoon reopening), US the
# mean of MSFT (2022-05/06) and AAPL (2026-07/08). tests/test_universe.py re-measures and compares.
CALIBRATION: dict[Market, Calibration] = {
    Market.HK: Calibration(
        daily_sigma=0.0329,
        gap_share=0.75,
        minute_sigma_per_daily=0.0466,
        volume_u=(2.28, 1.63, 1.26, 1.04, 0.93, 0.76, 0.66, 1.08, 0.54, 0.51, 1.39,
                  0.65, 0.67, 0.73, 0.76, 0.69, 0.84, 0.78, 0.79, 0.94, 1.07, 2.02),
        volatility_u=(1.96, 1.32, 1.25, 1.02, 1.02, 0.95, 0.88, 0.98, 0.95, 0.69, 1.25,
                      0.90, 0.85, 0.91, 0.93, 0.78, 0.82, 0.83, 0.78, 0.96, 0.84, 1.13),
    ),
    Market.US: Calibration(
        daily_sigma=0.0195,
        gap_share=0.63,
        minute_sigma_per_daily=0.0436,
        volume_u=(3.78, 1.55, 1.33, 1.05, 0.98, 0.91, 0.89, 0.79, 0.78, 0.68, 0.67, 0.62, 0.67,
                  0.62, 0.62, 0.59, 0.54, 0.61, 0.71, 0.58, 0.67, 0.62, 0.79, 0.91, 1.10, 3.04),
        volatility_u=(2.72, 1.68, 1.52, 1.34, 1.09, 1.02, 0.98, 0.91, 0.93, 0.86, 0.82, 0.81, 0.79,
                      0.80, 0.76, 0.69, 0.70, 0.65, 0.84, 0.62, 0.66, 0.69, 0.79, 0.88, 0.97, 1.53),
    ),
}
# Volatility clustering: GARCH(1,1) persistence. The samples' autocorrelation of squared daily
# returns (0.29-0.59 at lag 1) and of |1-minute returns| (0.19-0.28 at lag 1, ~0.1-0.15 at lag 30)
# point to high persistence at both scales.
DAILY_GARCH = (0.10, 0.85)   # (alpha, beta)
MINUTE_GARCH = (0.08, 0.90)
STUDENT_T_DF = 5             # fat tails: the samples' 1-minute returns have excess kurtosis 4-22
WICK_SCALE = 0.6             # extra high/low excursion beyond open/close, in minute sigmas


def measure_calibration(series: Sequence[BarSeries], calendar: MarketCalendar) -> Calibration:
    """Re-measure the calibration figures from real bars (full sessions only)."""
    daily_sigmas, gap_shares, minute_ratios, volume_us, vol_us = [], [], [], [], []
    for s in series:
        daily = s.daily.loc["2019-01-01":]
        returns = np.log(daily["close"]).diff().dropna()
        gaps = np.log(daily["open"] / daily["close"].shift()).dropna()
        daily_sigma = float(returns.std())
        frame = _minute_frame(s.minute, calendar)
        daily_sigmas.append(daily_sigma)
        gap_shares.append(float(gaps.std()) / daily_sigma)
        minute_ratios.append(float(frame["r"].std()) / daily_sigma)
        share = frame.groupby(["day", "bucket"])["volume"].sum() / frame.groupby("day")["volume"].sum()
        by_bucket = share.groupby("bucket").mean()
        volume_us.append(by_bucket / by_bucket.mean())
        sd = frame.groupby("bucket")["r"].std()
        vol_us.append(sd / sd.mean())
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    return Calibration(
        daily_sigma=mean(daily_sigmas),
        gap_share=mean(gap_shares),
        minute_sigma_per_daily=mean(minute_ratios),
        volume_u=tuple(np.round(pd.concat(volume_us, axis=1).mean(axis=1).to_numpy(), 2)),
        volatility_u=tuple(np.round(pd.concat(vol_us, axis=1).mean(axis=1).to_numpy(), 2)),
    )


def _minute_frame(minute: pd.DataFrame, calendar: MarketCalendar) -> pd.DataFrame:
    days = pd.Index(minute.index.tz_convert(calendar.tz).date)
    full = calendar.full_day_minutes(calendar.market)
    rows = []
    for day in days.unique():
        bars = minute[days == day]
        session = calendar.session(day)
        if session is None or session.trading_minutes != full or len(bars) != full:
            continue
        r = np.log(bars["close"]).diff()
        rows.append(pd.DataFrame({
            "day": day, "bucket": np.arange(full) // BUCKET_MINUTES,
            "r": r.to_numpy(), "volume": bars["volume"].to_numpy(),
        }))
    return pd.concat(rows, ignore_index=True)


# --- Symbol profiles ------------------------------------------------------------------------------
# (lowest price, highest price, board lot). Lots follow price the way HKEX listings do: cheap
# shares trade in big lots. Three profiles put one lot above the HKD 10,000 position cap.
HK_PROFILES: tuple[tuple[float, float, int], ...] = (
    (0.60, 0.95, 2000), (0.80, 1.60, 2000), (1.2, 2.4, 1000), (1.5, 3.0, 2000), (2.0, 4.0, 1000),
    (2.5, 5.0, 1000), (3.0, 6.0, 500), (4.0, 8.0, 1000), (5.0, 9.5, 500), (6.0, 9.8, 400),
    (10.5, 15.0, 500), (12.0, 19.0, 200), (15.0, 19.5, 400), (21.0, 35.0, 200), (25.0, 48.0, 100),
    (30.0, 45.0, 200), (40.0, 60.0, 100), (52.0, 75.0, 100), (60.0, 95.0, 100), (70.0, 98.0, 200),
    (105.0, 150.0, 500), (120.0, 190.0, 500), (110.0, 160.0, 100), (150.0, 195.0, 200),
    (210.0, 320.0, 100), (250.0, 480.0, 100), (310.0, 450.0, 500), (520.0, 900.0, 100),
    (8.0, 9.9, 1000), (35.0, 49.0, 500),
)
US_PRICE_RANGE = (4.0, 600.0)


@dataclass(frozen=True)
class _Profile:
    symbol: Symbol
    name: str
    lot_size: int
    start_price: float
    daily_sigma: float
    daily_volume: float


def _profiles(market: Market, size: int, rng: np.random.Generator) -> list[_Profile]:
    calibration = CALIBRATION[market]
    out = []
    order = rng.permutation(len(HK_PROFILES))
    for i in range(size):
        if market is Market.HK:
            low, high, lot = HK_PROFILES[order[i % len(order)]]
        else:
            low, high, lot = *US_PRICE_RANGE, 1
        price = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        # Cheaper shares move more; each symbol gets its own temperament around the sample's.
        sigma = calibration.daily_sigma * float(np.exp(rng.normal(0, 0.3))) * (1.3 if price < 5 else 1.0)
        turnover = float(np.exp(rng.uniform(np.log(2e7), np.log(2e9))))
        symbol = synthetic_symbol(market, i)
        out.append(_Profile(symbol, f"SYNTH {market.value} {i + 1:02d}", lot, price, sigma, turnover / price))
    return out


# --- Tick grid, vectorised ------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _tick_table(market: Market, on: date) -> tuple[np.ndarray, np.ndarray]:
    if market is Market.US:
        return np.array([1.0 - 1e-9, np.inf]), np.array([0.0001, 0.01])
    # The spread table itself lives in instruments; this only lays it out for numpy.
    bands = _hk_bands(on, None)
    return np.array([float(u) for u, _ in bands]), np.array([float(t) for _, t in bands])


def round_prices_to_tick(prices: np.ndarray, market: Market, on: date) -> np.ndarray:
    """``instruments.round_to_tick`` (nearest, half up) for a whole array at once."""
    uppers, ticks = _tick_table(market, on)
    prices = np.asarray(prices, dtype=float)
    tick = ticks[np.minimum(np.searchsorted(uppers, prices, side="left"), len(ticks) - 1)]
    rounded = np.floor(prices / tick + 0.5 + 1e-9) * tick
    # A price rounded up into a band with a coarser tick must sit on that band's grid.
    coarser = ticks[np.minimum(np.searchsorted(uppers, np.round(rounded, 6), side="left"), len(ticks) - 1)]
    moved = coarser != tick
    rounded[moved] = np.floor(rounded[moved] / coarser[moved] + 0.5 + 1e-9) * coarser[moved]
    return np.round(rounded, 4)


# --- Generation -----------------------------------------------------------------------------------
def build_universe(
    market: Market, seed: int, size: int, sessions: list[Session], calendar: MarketCalendar
) -> dict[Symbol, BarSeries]:
    """``size`` synthetic symbols with 1-minute bars for ``sessions`` and daily bars for the
    ``HISTORY_SESSIONS`` sessions before them (plus the sessions themselves, made from the
    minute bars: cut at today as with the real daily files)."""
    if not 1 <= size <= MAX_UNIVERSE_SIZE:
        raise ValueError(f"universe size must be 1..{MAX_UNIVERSE_SIZE}, got {size}")
    if not sessions:
        raise ValueError("build_universe needs at least one session")
    sessions = sorted(sessions, key=lambda s: s.day)
    wrong = [s.day for s in sessions if s.market is not market]
    if wrong:
        raise ValueError(f"sessions {wrong[:3]} are not {market.value} sessions")
    rng = np.random.default_rng([seed, 0 if market is Market.HK else 1])
    profiles = _profiles(market, size, rng)
    history = calendar.previous_sessions(sessions[0].day, HISTORY_SESSIONS)
    generator = _Generator(market, profiles, rng)
    history_daily = generator.history([s.day for s in history])
    minute_parts, session_daily = [], []
    for session in sessions:
        minute, daily = generator.session(session)
        minute_parts.append(minute)
        session_daily.append(daily)
    return _assemble(profiles, history, history_daily, sessions, minute_parts, session_daily)


class _Generator:
    """Carries prices and volatility states from one day to the next, all symbols at once."""

    def __init__(self, market: Market, profiles: list[_Profile], rng: np.random.Generator) -> None:
        self.market = market
        self.rng = rng
        self.calibration = CALIBRATION[market]
        self.n = len(profiles)
        self.close = np.array([p.start_price for p in profiles])
        self.base_sigma = np.array([p.daily_sigma for p in profiles])
        self.base_volume = np.array([p.daily_volume for p in profiles])
        self.daily_var = self.base_sigma ** 2
        self.minute_var = np.ones(self.n)
        self.last_return = np.zeros(self.n)

    def _next_day_sigma(self) -> np.ndarray:
        alpha, beta = DAILY_GARCH
        self.daily_var = (1 - alpha - beta) * self.base_sigma ** 2 + alpha * self.last_return ** 2 + beta * self.daily_var
        return np.sqrt(self.daily_var)

    def _t(self, shape) -> np.ndarray:
        return self.rng.standard_t(STUDENT_T_DF, size=shape) / np.sqrt(STUDENT_T_DF / (STUDENT_T_DF - 2))

    def history(self, days: list[date]) -> np.ndarray:
        """Daily OHLCV for ``days``: array (days, symbols, 5)."""
        out = np.empty((len(days), self.n, 5))
        gap_share = self.calibration.gap_share
        body_share = np.sqrt(max(0.0, 1 - gap_share ** 2))
        for k, day in enumerate(days):
            sigma = self._next_day_sigma()
            open_ = self.close * np.exp(gap_share * sigma * self.rng.standard_normal(self.n))
            close = open_ * np.exp(body_share * sigma * self._t(self.n))
            wick = np.abs(self.rng.standard_normal((2, self.n))) * 0.5 * sigma
            high = np.maximum(open_, close) * np.exp(wick[0])
            low = np.minimum(open_, close) * np.exp(-wick[1])
            surprise = np.abs(np.log(close / self.close)) / self.base_sigma
            volume = self.base_volume * np.exp(0.35 * self.rng.standard_normal(self.n)) * (0.7 + 0.3 * surprise)
            self.last_return = np.log(close / self.close)
            self.close = close
            prices = np.stack([open_, high, low, close])
            out[k, :, :4] = round_prices_to_tick(prices, self.market, day).T
            out[k, :, 4] = np.round(volume)
        return out

    def session(self, session: Session) -> tuple[np.ndarray, np.ndarray]:
        """Minute OHLCV (minutes, symbols, 5) and the day's OHLCV (symbols, 5)."""
        grid_minutes = session.trading_minutes
        bucket = np.minimum(np.arange(grid_minutes) // BUCKET_MINUTES, len(self.calibration.volume_u) - 1)
        vol_u = np.asarray(self.calibration.volatility_u)[bucket]
        volume_u = np.asarray(self.calibration.volume_u)[bucket]
        volume_u = volume_u / volume_u.sum()

        sigma_day = self._next_day_sigma()
        drift, volume_boost, gap_boost, news = self._events(grid_minutes, sigma_day)
        gap = self.calibration.gap_share * sigma_day * self.rng.standard_normal(self.n)
        gap[news] = gap_boost[news]  # the news sets the gap of a symbol that has some
        day_open = self.close * np.exp(gap)

        # The random walk carries the day's body variance; bid-ask bounce (noise around it that
        # cancels out over the day) brings 1-minute returns up to the measured minute volatility.
        body_share = np.sqrt(max(0.0, 1 - self.calibration.gap_share ** 2))
        minute_sigma = body_share * sigma_day / np.sqrt(np.sum(vol_u ** 2))
        u_power = np.mean(vol_u ** 2)
        walk_var = minute_sigma ** 2 * u_power
        bounce = np.sqrt(np.maximum(0.0, (self.calibration.minute_sigma_per_daily * sigma_day) ** 2 - walk_var) / (2 * u_power))
        shocks = self._t((grid_minutes, self.n))
        alpha, beta = MINUTE_GARCH
        clustering = np.empty((grid_minutes, self.n))
        var = self.minute_var
        for m in range(grid_minutes):
            clustering[m] = np.sqrt(var)
            var = (1 - alpha - beta) + alpha * shocks[m] ** 2 * var + beta * var
        self.minute_var = var
        scale = vol_u[:, None] * clustering
        returns = minute_sigma * scale * shocks + drift

        latent = day_open * np.exp(np.cumsum(returns, axis=0))
        close = latent * np.exp(bounce * scale * self.rng.standard_normal(latent.shape))
        open_ = np.vstack([day_open, close[:-1]])
        spread = minute_sigma * vol_u[:, None] * WICK_SCALE
        high = np.maximum(open_, close) * np.exp(spread * np.abs(self.rng.standard_normal(close.shape)))
        low = np.minimum(open_, close) * np.exp(-spread * np.abs(self.rng.standard_normal(close.shape)))

        day_volume = self.base_volume * np.exp(0.3 * self.rng.standard_normal(self.n))
        activity = 1 + 0.5 * np.abs(shocks)  # big moves come with volume
        noise = np.exp(0.5 * self.rng.standard_normal(close.shape) - 0.125)
        volume = np.round(day_volume * volume_u[:, None] * activity * noise * volume_boost)

        prices = round_prices_to_tick(np.stack([open_, high, low, close]), self.market, session.day)
        minute = np.concatenate([np.moveaxis(prices, 0, -1), volume[..., None]], axis=-1)
        daily = np.stack([
            minute[0, :, 0], minute[:, :, 1].max(axis=0), minute[:, :, 2].min(axis=0),
            minute[-1, :, 3], minute[:, :, 4].sum(axis=0),
        ], axis=-1)
        self.last_return = np.log(latent[-1] / self.close)
        self.close = latent[-1]
        return minute, daily

    def _events(self, minutes: int, sigma_day: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Two or three symbols per session get news: a volume-spike breakout (up or down) or a gap
        that keeps going, so the scanner always has something to find."""
        drift = np.zeros((minutes, self.n))
        boost = np.ones((minutes, self.n))
        gap = np.zeros(self.n)
        count = min(self.n, 2 + int(self.rng.integers(0, 2)))
        news = self.rng.choice(self.n, size=count, replace=False)
        for s in news:
            kind = self.rng.choice(["breakout", "gap_and_go", "breakdown"], p=[0.5, 0.3, 0.2])
            if kind == "gap_and_go":
                gap[s] = self.rng.uniform(0.03, 0.06)
                boost[:, s] = self.rng.uniform(3.0, 4.5)
                drift[: minutes // 2, s] = self.rng.uniform(0.01, 0.03) / max(1, minutes // 2)
                continue
            start = int(self.rng.integers(minutes // 8, max(minutes // 8 + 1, minutes // 2)))
            length = int(min(minutes - start, self.rng.integers(30, 91)))
            # Large against the symbol's own volatility, so the day's noise cannot hide it.
            move = max(0.04, self.rng.uniform(2.0, 3.0) * sigma_day[s]) * (1 if kind == "breakout" else -1)
            drift[start:start + length, s] = move / length
            boost[start:start + length, s] = self.rng.uniform(6.0, 10.0)
            boost[start + length:, s] = 3.0  # interest lingers after the move
        return drift, boost, gap, news


def _assemble(
    profiles: list[_Profile], history: list[Session], history_daily: np.ndarray,
    sessions: list[Session], minute_parts: list[np.ndarray], session_daily: list[np.ndarray],
) -> dict[Symbol, BarSeries]:
    minute_index = pd.DatetimeIndex([t for s in sessions for t in s.minute_grid()]).tz_convert("UTC")
    minute_all = np.concatenate(minute_parts, axis=0)           # (minutes, symbols, 5)
    daily_all = np.concatenate([history_daily, np.stack(session_daily)], axis=0)  # (days, symbols, 5)
    daily_index = pd.DatetimeIndex([pd.Timestamp(s.day) for s in [*history, *sessions]])
    out: dict[Symbol, BarSeries] = {}
    for i, p in enumerate(profiles):
        out[p.symbol] = BarSeries(
            symbol=p.symbol,
            name=p.name,
            lot_size=p.lot_size,
            synthetic=True,
            minute=pd.DataFrame(minute_all[:, i, :], index=minute_index, columns=BAR_COLUMNS),
            daily=pd.DataFrame(daily_all[:, i, :], index=daily_index, columns=BAR_COLUMNS),
        )
    return out
