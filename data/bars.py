"""Bars from CSV files: read, check, put on the tick grid and the session grid, resample.

Pure functions on pandas. A ``BarSeries`` holds one symbol's 1-minute bars (UTC index = the
bar's open time, only minutes of the exchange's sessions) and its daily bars (index = the
market-local date). Prices are floats for the indicators, but every one of them sits on the tick
grid: the feeds' float noise (``85.4000015258789``) is rounded away with ``Decimal`` on load.

File names say what a file holds: ``<CODE>_1m_*.csv``, ``<CODE>_5m_*.csv``, ``<CODE>_1d_*.csv``
or ``<CODE>.csv`` (frequency inferred from the spacing of the timestamps). A number is a Hong
Kong code, a ticker a US one (``instruments.parse_symbol``). A file with a ``symbol`` column (the
shape of Alpaca and Moomoo exports) holds several symbols under any name. The time column may be
called ``datetime``, ``timestamp``, ``time`` or ``date`` (any case); a naive time is in the
market's time zone unless the caller names another.

Bad data is refused, never resolved silently: a time twice in one file, ``open``/``close``
outside ``low..high``, a price that is not positive -- with the file and the row.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from brokers.base import BAR_COLUMNS, Timeframe
from data.calendar import TIMEZONES, MarketCalendar
from core.instruments import HK_SPREAD_PHASE1_DATE, Market, Symbol, SymbolError, parse_symbol, round_to_tick

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
NEWS_FILE = "news.csv"
PRICE_COLUMNS = ["open", "high", "low", "close"]
TIME_COLUMNS = ("datetime", "timestamp", "time", "date")
SYMBOL_COLUMN = "symbol"
LOTS_FILE = "lots.csv"
NOT_BAR_FILES = (NEWS_FILE, LOTS_FILE)  # beside the bars: a replay's headlines and board lots

# Board lots of the bundled samples. Real lots come from the broker snapshot (``lot_size``);
# this table only serves the sample files and the paper exchange that replays them.
KNOWN_LOT_SIZES: dict[Symbol, int] = {
    Symbol(Market.HK, "09988"): 100,
    Symbol(Market.US, "MSFT"): 1,
    Symbol(Market.US, "AAPL"): 1,
}
KNOWN_NAMES: dict[Symbol, str] = {
    Symbol(Market.HK, "09988"): "Alibaba Group",
    Symbol(Market.US, "MSFT"): "Microsoft",
    Symbol(Market.US, "AAPL"): "Apple",
}
# An unknown HK code gets the most common board lot; the broker snapshot has the real one.
DEFAULT_HK_LOT = 100


class BarFileError(ValueError):
    """A bar file that cannot be used; the message names the file, the row and what is expected."""


@dataclass(frozen=True)
class BarSeries:
    symbol: Symbol
    name: str
    lot_size: int
    synthetic: bool
    minute: pd.DataFrame
    daily: pd.DataFrame
    resolution_minutes: int = 1  # the spacing of ``minute``: 1, or 5 for a code with only 5-minute bars


def empty_bars(utc_index: bool = True) -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC" if utc_index else None)
    return pd.DataFrame({c: pd.Series([], dtype=float) for c in BAR_COLUMNS}, index=index)


def default_lot_size(symbol: Symbol) -> int:
    if symbol in KNOWN_LOT_SIZES:
        return KNOWN_LOT_SIZES[symbol]
    return DEFAULT_HK_LOT if symbol.market is Market.HK else 1


# --- Loading ------------------------------------------------------------------------------------
def load_samples(market: Market) -> dict[Symbol, BarSeries]:
    """The real bars bundled in ``data/samples`` for ``market``."""
    return load_bars(SAMPLES_DIR / market.value.lower(), market)


def load_bars(
    path: str | Path, market: Market | None = None, *, hk_phase2_date: date | None = None, tz: str | None = None
) -> dict[Symbol, BarSeries]:
    """One CSV file or a folder of them, as one ``BarSeries`` per symbol.

    With ``market``, files of the other market are skipped in a folder and refused as a single
    file. A 1-minute and a daily file of the same code merge; a 5-minute file is used only when
    there is no 1-minute file for the code. ``hk_phase2_date`` (the profile's
    ``ticks.hk_phase2_date``) matters only for HK bars from that date on. ``tz`` (an IANA name)
    is the zone of naive times; by default the market's own.
    """
    path = Path(path)
    if path.is_dir():
        described = [d for p in bar_files(path) for d in _describe_path(p)]
        if market is not None:
            described = [d for d in described if d.symbol.market is market]
    elif path.is_file():
        described = _describe_path(path)
        if market is not None and described and all(d.symbol.market is not market for d in described):
            raise BarFileError(f"{path}: holds {described[0].symbol}, not a {market.value} symbol")
        if market is not None:
            described = [d for d in described if d.symbol.market is market]
    else:
        raise FileNotFoundError(f"no bar file or folder at {path}")
    by_symbol: dict[Symbol, list[_BarFile]] = {}
    for d in described:
        by_symbol.setdefault(d.symbol, []).append(d)
    return {
        symbol: _series_from_files(symbol, files, hk_phase2_date, tz) for symbol, files in sorted(by_symbol.items())
    }


def bar_files(folder: Path) -> list[Path]:
    """The CSV files of a folder that hold bars (not ``news.csv`` or ``lots.csv``)."""
    return sorted(p for p in folder.glob("*.csv") if p.is_file() and p.name.lower() not in NOT_BAR_FILES)


def symbols_in(path: str | Path) -> list[Symbol]:
    """The symbols a bar file or folder holds (from the file names, or a file's ``symbol`` column)."""
    return sorted(files_by_symbol(path))


def files_by_symbol(path: str | Path) -> dict[Symbol, list[Path]]:
    """The files that hold each symbol of a bar file or folder (unreadable files are left out)."""
    path = Path(path)
    files = bar_files(path) if path.is_dir() else [path] if path.is_file() else []
    found: dict[Symbol, list[Path]] = {}
    for f in files:
        try:
            for d in _describe_path(f):
                found.setdefault(d.symbol, []).append(f)
        except BarFileError:
            continue
    return found


@dataclass(frozen=True, eq=False)
class _BarFile:
    path: Path
    symbol: Symbol
    marker: str | None  # "1m", "5m", "1d" or None (infer)
    rows: pd.DataFrame | None = None  # this symbol's rows of a file with a symbol column


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        return [c.strip().strip('"').lower() for c in f.readline().split(",")]


def _describe_path(path: Path) -> list[_BarFile]:
    if SYMBOL_COLUMN not in _header(path):
        return [_describe_file(path)]
    raw = _read_csv(path)
    marker = _FREQ_MARKER.search(path.stem)
    out = []
    for code, rows in raw.groupby(raw[SYMBOL_COLUMN].str.strip(), sort=True):
        try:
            symbol = parse_symbol(code)
        except SymbolError as e:
            raise BarFileError(f"{path}: {_row(rows, 0)}: symbol {code!r} is not a symbol; {e}") from e
        out.append(_BarFile(path, symbol, marker.group(1).lower() if marker else None, rows.drop(columns=SYMBOL_COLUMN)))
    return out


_FREQ_MARKER = re.compile(r"_(1m|5m|1d)(?:_|$)", re.IGNORECASE)


def _describe_file(path: Path) -> _BarFile:
    code = path.stem.split("_")[0]
    try:
        symbol = parse_symbol(code)
    except SymbolError as e:
        raise BarFileError(f"{path}: the file name must start with a symbol code (<CODE>_1m_....csv); {e}") from e
    marker = _FREQ_MARKER.search(path.stem)
    return _BarFile(path, symbol, marker.group(1).lower() if marker else None)


def _series_from_files(symbol: Symbol, files: list[_BarFile], hk_phase2_date: date | None,
                       tz: str | None = None) -> BarSeries:
    calendar = MarketCalendar(symbol.market)
    ticks = _TickRounder(symbol.market, hk_phase2_date)
    intraday: dict[int, list[pd.DataFrame]] = {}
    daily_parts: list[pd.DataFrame] = []
    for f in files:
        raw = _read_csv(f.path) if f.rows is None else f.rows
        if _is_daily(f, raw):
            daily_parts.append(_daily_frame(f.path, raw, ticks))
        else:
            frame = _intraday_frame(f.path, raw, ticks, tz)
            step = _spacing_minutes(frame) if f.marker is None else int(f.marker[:-1])
            intraday.setdefault(step, []).append(frame)
    # The finest intraday file wins: 5-minute bars only serve when there are no 1-minute ones.
    resolution = min(intraday) if intraday else 1
    minute = pd.concat(intraday[resolution]) if intraday else empty_bars()
    minute = _on_session_grid(_sorted_unique(minute), calendar)
    daily = _sorted_unique(pd.concat(daily_parts)) if daily_parts else empty_bars(utc_index=False)
    return BarSeries(
        symbol=symbol,
        name=KNOWN_NAMES.get(symbol, symbol.short),
        lot_size=default_lot_size(symbol),
        synthetic=False,
        minute=minute,
        daily=daily,
        resolution_minutes=resolution,
    )


def _read_csv(path: Path, as_text: bool = False) -> pd.DataFrame:
    """The file's time, bar (and symbol) columns. The bar columns are read as numbers by the CSV
    parser when every cell is one; otherwise, or with ``as_text``, every column is text, so that a
    refusal can quote the cell as it is written."""
    try:
        raw = None if as_text else _read_with_numeric_bars(path)
        if raw is None:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BarFileError(f"{path}: not a readable CSV ({e}); expected a header datetime,{','.join(BAR_COLUMNS)}") from e
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    time_columns = [c for c in TIME_COLUMNS if c in raw.columns]
    missing = [c for c in BAR_COLUMNS if c not in raw.columns]
    if not time_columns or missing:
        wanted = ([] if time_columns else ["date or datetime"]) + missing
        raise BarFileError(
            f"{path}: missing column(s) {', '.join(wanted)}; found {', '.join(raw.columns) or 'none'}; "
            f"expected datetime|timestamp|time|date,{','.join(BAR_COLUMNS)}"
        )
    raw = raw.rename(columns={time_columns[0]: "time"}) if time_columns[0] != "time" else raw
    return raw[["time", *BAR_COLUMNS, *([SYMBOL_COLUMN] if SYMBOL_COLUMN in raw.columns else [])]]


def _read_with_numeric_bars(path: Path) -> pd.DataFrame | None:
    """The file with its bar columns parsed as floats (the rest as text); None when a bar cell is not
    a number."""
    names = list(pd.read_csv(path, nrows=0).columns)
    dtypes = {n: "float64" if str(n).strip().lower() in BAR_COLUMNS else str for n in names}
    try:
        return pd.read_csv(path, keep_default_na=False, dtype=dtypes)
    except (ValueError, OverflowError):
        return None


def _row(raw: pd.DataFrame, i: int) -> str:
    # Line numbers as a person sees them in an editor: the header is line 1 (the frame keeps the
    # file's row order in its index, also for one symbol's rows of a shared file).
    return f"row {int(raw.index[i]) + 2}"


def _refuse_repeated_times(path: Path, raw: pd.DataFrame, index: pd.Index) -> None:
    repeated = index.duplicated(keep="first")
    if repeated.any():
        j = int(np.flatnonzero(repeated)[0])
        i = int(np.flatnonzero(index == index[j])[0])
        raise BarFileError(f"{path}: {_row(raw, i)} and {_row(raw, j)}: time {raw['time'].iloc[j].strip()!r} twice; "
                           "expected one bar per time")


def _numbers(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    """The bar columns as floats, every cell checked: a bad one is refused with its file and row."""
    if all(raw[c].dtype == np.float64 for c in BAR_COLUMNS):
        values = {c: raw[c].to_numpy() for c in BAR_COLUMNS}
        if all(np.isfinite(v).all() for v in values.values()):
            return _checked(path, raw, values)
        # A cell the parser read as nan or inf: quote it as it is written.
        raw = _read_csv(path, as_text=True).loc[raw.index]
    return _checked(path, raw, {c: _floats_of_text(raw[c]) for c in BAR_COLUMNS})


def _floats_of_text(cells: pd.Series) -> np.ndarray:
    """The cells as floats, nan where a cell is not a number."""
    values = pd.to_numeric(cells, errors="coerce").astype(float)
    if values.isna().any():  # stripping every cell is slow; only text that did not parse needs it
        values = pd.to_numeric(cells.str.strip(), errors="coerce").astype(float)
    return values.to_numpy()


def _checked(path: Path, raw: pd.DataFrame, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """``values`` as the bar frame, once every cell is a number, every price positive, volumes not
    negative and each bar's open and close within its low..high."""
    for column in BAR_COLUMNS:
        v = values[column]
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BarFileError(f"{path}: {_row(raw, i)}: {column} is {raw[column].iloc[i]!r}; expected a number")
        if column == "volume":
            negative = v < 0
            if negative.any():
                i = int(np.flatnonzero(negative)[0])
                raise BarFileError(f"{path}: {_row(raw, i)}: volume is {v[i]}; expected zero or more")
        else:
            not_positive = v <= 0
            if not_positive.any():
                i = int(np.flatnonzero(not_positive)[0])
                raise BarFileError(f"{path}: {_row(raw, i)}: {column} is {v[i]}; expected a positive price")
    high, low = values["high"], values["low"]
    inverted = high < low
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise BarFileError(f"{path}: {_row(raw, i)}: high {high[i]} is below low {low[i]}; expected high >= low")
    slack = high * 1e-9  # float noise of the feeds, rounded away on the tick grid
    for column in ("open", "close"):
        outside = (values[column] < low - slack) | (values[column] > high + slack)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise BarFileError(f"{path}: {_row(raw, i)}: {column} {values[column][i]} is outside low..high "
                               f"{low[i]}..{high[i]}; expected low <= {column} <= high")
    return pd.DataFrame(values, index=raw.index)


def _parse_times(path: Path, raw: pd.DataFrame, market: Market, tz: str | None = None) -> pd.DatetimeIndex:
    try:
        # The common file: every time with the same offset, or every time naive.
        parsed = pd.DatetimeIndex(pd.to_datetime(raw["time"].to_numpy(), format="ISO8601"))
    except (ValueError, TypeError):
        parsed = None
    if parsed is not None and not parsed.isna().any():
        if parsed.tz is not None:
            return parsed.tz_convert("UTC").as_unit("us")
        local = parsed.tz_localize(tz or TIMEZONES[market], ambiguous="NaT", nonexistent="NaT")
        if not local.isna().any():
            return local.tz_convert("UTC").as_unit("us")
    text = raw["time"].str.strip()
    has_offset = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True)
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        parsed[has_offset] = pd.to_datetime(text[has_offset], errors="coerce", utc=True, format="ISO8601")
    if (~has_offset).any():
        # Naive intraday times are read as exchange-local time (as Moomoo hands them out), or --tz.
        naive = pd.to_datetime(text[~has_offset], errors="coerce", format="ISO8601")
        parsed[~has_offset] = naive.dt.tz_localize(
            tz or TIMEZONES[market], ambiguous="NaT", nonexistent="NaT"
        ).dt.tz_convert("UTC")
    bad = parsed.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BarFileError(
            f"{path}: {_row(raw, i)}: time {raw['time'].iloc[i]!r} is not a timestamp; expected e.g. "
            "'2022-06-15 01:30:00+00:00', '2026-07-29 09:30:00-04:00' or '2022-06-15'"
        )
    return pd.DatetimeIndex(parsed)


def _is_daily(f: _BarFile, raw: pd.DataFrame) -> bool:
    if f.marker is not None:
        return f.marker == "1d"
    return bool(raw["time"].str.strip().str.fullmatch(r"\d{4}-\d{2}-\d{2}").all())


def _daily_frame(path: Path, raw: pd.DataFrame, ticks: "_TickRounder") -> pd.DataFrame:
    text = raw["time"].str.strip().str.slice(0, 10)
    days = pd.to_datetime(text, errors="coerce", format="%Y-%m-%d")
    bad = days.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BarFileError(f"{path}: {_row(raw, i)}: date {raw['time'].iloc[i]!r} is not a date; expected YYYY-MM-DD")
    frame = _numbers(path, raw)
    frame.index = pd.DatetimeIndex(days).normalize()
    _refuse_repeated_times(path, raw, frame.index)
    return ticks.apply(frame, frame.index.to_numpy().astype("datetime64[D]"))


def _intraday_frame(path: Path, raw: pd.DataFrame, ticks: "_TickRounder", tz: str | None = None) -> pd.DataFrame:
    index = _parse_times(path, raw, ticks.market, tz)
    _refuse_repeated_times(path, raw, index)
    frame = _numbers(path, raw)
    frame.index = index
    return ticks.apply(frame, index.tz_convert(TIMEZONES[ticks.market]).tz_localize(None).to_numpy().astype("datetime64[D]"))


def _spacing_minutes(frame: pd.DataFrame) -> int:
    gaps = frame.index.sort_values().to_series().diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        return 1
    return max(1, int(gaps.min().total_seconds() // 60))


def _sorted_unique(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    frame.index.name = None
    return frame


# --- Tick grid ----------------------------------------------------------------------------------
class _TickRounder:
    """``round_to_tick`` over a frame, each price rounded once (minute bars repeat prices a lot)."""

    def __init__(self, market: Market, hk_phase2_date: date | None) -> None:
        self.market = market
        self.hk_phase2_date = hk_phase2_date
        self._memo: dict[tuple[float, date], float] = {}

    def _table_day(self, day: date) -> date:
        # The tick depends on the day only through the spread table in force; one representative
        # day per table lets the memo hit across days.
        if self.market is Market.US:
            return _ANY_DAY
        if self.hk_phase2_date is not None and day >= self.hk_phase2_date:
            return self.hk_phase2_date
        return HK_SPREAD_PHASE1_DATE if day >= HK_SPREAD_PHASE1_DATE else _ANY_DAY

    def price(self, value: float, day: date) -> float:
        key = (value, self._table_day(day))
        if key not in self._memo:
            self._memo[key] = float(round_to_tick(self.market, value, key[1], hk_phase2_date=self.hk_phase2_date))
        return self._memo[key]

    def apply(self, frame: pd.DataFrame, days: np.ndarray) -> pd.DataFrame:
        """``frame`` with its prices on the tick grid of each row's market-local day (datetime64[D])."""
        out = frame.copy()
        # Each distinct (price, tick table) is rounded once and spread back over the rows: the
        # same prices as rounding row by row, without a Python call per price.
        unique_days, day_of_row = np.unique(days, return_inverse=True)
        tables = [self._table_day(d.astype(object)) for d in unique_days]
        distinct_tables = sorted(set(tables))
        table_of_row = np.array([distinct_tables.index(t) for t in tables], dtype=np.int64)[day_of_row] \
            if len(unique_days) else np.zeros(0, dtype=np.int64)
        for column in PRICE_COLUMNS:
            values = frame[column].to_numpy(dtype=float)
            rounded = np.empty(len(values), dtype=float)
            for code, table in enumerate(distinct_tables):
                rows = table_of_row == code
                distinct, position = np.unique(values[rows], return_inverse=True)
                rounded[rows] = np.array([self.price(float(v), table) for v in distinct.tolist()], dtype=float)[position]
            out[column] = rounded
        out["volume"] = out["volume"].astype(float)
        return out


_ANY_DAY = date(2000, 1, 3)  # before every tick-table change


# --- Session grid -------------------------------------------------------------------------------
_OUTSIDE = np.iinfo(np.int64).min  # NaT's integer: a bar outside every session part


def _session_part_starts(index: pd.DatetimeIndex, calendar: MarketCalendar) -> np.ndarray:
    """Per bar: the start (UTC nanoseconds) of the session part (open to lunch, lunch to close) it
    is in; ``_OUTSIDE`` for a bar outside every part. Walks the days from the first bar's to the
    last bar's, so the index itself is never converted to local time (a resample a candidate)."""
    utc = index.tz_convert("UTC").as_unit("ns").asi8
    starts = np.full(len(utc), _OUTSIDE, dtype=np.int64)
    if len(utc) == 0:
        return starts
    in_order = bool((utc[1:] >= utc[:-1]).all())
    day, last = (calendar.trading_day(pd.Timestamp(int(ns), tz="UTC")) for ns in (utc.min(), utc.max()))
    while day <= last:
        session = calendar.session(day)
        for start, end in session.parts if session else []:
            start_ns, end_ns = pd.Timestamp(start).value, pd.Timestamp(end).value
            if in_order:
                lo, hi = np.searchsorted(utc, [start_ns, end_ns])
                starts[lo:hi] = start_ns
            else:
                starts[(utc >= start_ns) & (utc < end_ns)] = start_ns
        day += timedelta(days=1)
    return starts


def _on_session_grid(frame: pd.DataFrame, calendar: MarketCalendar) -> pd.DataFrame:
    if frame.empty:
        return frame
    part_start = _session_part_starts(frame.index, calendar)
    whole_minute = (frame.index.second == 0) & (frame.index.microsecond == 0)
    keep = (part_start != _OUTSIDE) & whole_minute
    dropped = int((~keep).sum())
    if dropped:
        log.info("dropped %d bar(s) outside the %s session grid", dropped, calendar.market.value)
    return frame[keep]


# --- Resampling ---------------------------------------------------------------------------------
_AGGREGATION = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def resample(minute: pd.DataFrame, timeframe: Timeframe, calendar: MarketCalendar) -> pd.DataFrame:
    """Minute bars as ``timeframe`` bars.

    Intraday bars are anchored on the start of each session part and never span the lunch break
    (HK 1h: 09:30-10:30, 10:30-11:30, 11:30-12:00, 13:00-14:00 ...); the last bar of a part may be
    shorter. Daily bars are indexed by the market-local date (tz-naive).
    """
    if minute.empty:
        return empty_bars(utc_index=timeframe is not Timeframe.D1)
    if timeframe is Timeframe.M1:
        return minute.copy()
    if timeframe is Timeframe.D1:
        days = pd.DatetimeIndex(minute.index.tz_convert(calendar.tz).tz_localize(None)).normalize()
        out = minute.groupby(days).agg(_AGGREGATION)[BAR_COLUMNS]
        out.index.name = None
        return out
    part_start = _session_part_starts(minute.index, calendar)
    inside = part_start != _OUTSIDE
    bars = minute[inside]
    starts = part_start[inside]
    width = timeframe.minutes * 60_000_000_000
    # Each bar's label: the start of its part plus whole widths (integer nanoseconds, UTC).
    label_ns = starts + (bars.index.as_unit("ns").asi8 - starts) // width * width
    labels = pd.DatetimeIndex(label_ns.view("datetime64[ns]")).tz_localize("UTC")
    out = _aggregate_runs(bars, labels)
    if out is None:
        out = bars.groupby(labels).agg(_AGGREGATION)[BAR_COLUMNS]
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC")
    out.index.name = None
    return out


def _aggregate_runs(bars: pd.DataFrame, labels: pd.DatetimeIndex) -> pd.DataFrame | None:
    """``_AGGREGATION`` over runs of equal labels, with numpy: what ``groupby(labels).agg`` gives for
    rows in time order without missing values, for half the cost of a resample (a cycle resamples
    every candidate's minutes). None where that does not hold: the caller groups with pandas."""
    if bars.empty or not labels.is_monotonic_increasing:
        return None
    columns = {c: bars[c].to_numpy() for c in BAR_COLUMNS}
    if any(v.dtype.kind == "f" and np.isnan(v).any() for v in columns.values()):
        return None  # pandas' first/last/max skip missing values; numpy's would not
    keys = labels.asi8
    firsts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lasts = np.r_[firsts[1:] - 1, len(keys) - 1]
    return pd.DataFrame({
        "open": columns["open"][firsts],
        "high": np.maximum.reduceat(columns["high"], firsts),
        "low": np.minimum.reduceat(columns["low"], firsts),
        "close": columns["close"][lasts],
        "volume": np.add.reduceat(columns["volume"], firsts),
    }, index=labels[firsts])


def session_bars(series: BarSeries, day: date) -> pd.DataFrame:
    """The minute bars of the session on market-local date ``day`` (empty on a day without data)."""
    minute = series.minute
    if minute.empty:
        return minute.copy()
    local_days = minute.index.tz_convert(TIMEZONES[series.symbol.market]).date
    return minute[local_days == day].copy()

