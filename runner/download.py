"""``agent.py --download --market hk|us --symbols ... --from D --to D [--out DIR] [--feed F]``: bars from the broker.

Writes exactly what ``--replay`` reads: one file per symbol and month, ``<CODE>_1m_<YYYY-MM>.csv``
(``datetime`` in the market's time with its offset, then ``open,high,low,close,volume``), and for
HK a ``lots.csv`` with each code's board lot from the broker's snapshot. Moomoo through OpenD's
history K-lines (paged by the adapter) within the account's history K-line quota: a code counts
once per 30 days, codes already counted are free, and new codes beyond what remains are skipped,
one line each. Alpaca through alpaca-py's historical data client, on the feed ``--feed`` asks:
``auto`` (the default) asks SIP first and takes IEX when Alpaca answers that the subscription
does not permit SIP (a free plan: the last 15 minutes of SIP are refused), so that one download
never mixes the two; the feed is asked once, over the last week of the range, before anything is
written.

Resumable: a session already in its month's file is not fetched again, so a stopped download
started again fetches only what is missing. A symbol the broker does not know is one line and the
others go on (exit 1 at the end).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Callable, Protocol, cast

import pandas as pd

from brokers.base import BAR_COLUMNS, Broker, BrokerError, FeedNotPermitted, Timeframe, UnknownSymbol
from data.bars import LOTS_FILE
from data.calendar import MarketCalendar, Session
from data.lots import read_lots, write_lots
from core.instruments import Market, Symbol, SymbolError, parse_symbol
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE



class DownloadUsageError(ValueError):
    """Bad --symbols, --from/--to or no broker: exit 2 with this message."""


class HistoryFeeds(Protocol):
    """A broker whose history comes from one of several feeds (Alpaca: IEX or SIP)."""
    @property
    def history_feed(self) -> str: ...

    def use_history_feed(self, feed: str) -> None: ...


# A free plan's SIP refusal depends on the request's end (the last 15 minutes): the feed is
# asked over the range's last week, which reaches as close to now as any request of the download.
FEED_PROBE = timedelta(days=7)


def month_file(out: Path, symbol: Symbol, month: str) -> Path:
    return out / f"{symbol.short}_1m_{month}.csv"


def parse_request(symbols_text: list[str] | None, start_text: str | None, end_text: str | None, market: Market,
                  calendar: MarketCalendar) -> tuple[list[Symbol], list[Session]]:
    if not symbols_text:
        raise DownloadUsageError("--download needs --symbols (e.g. --symbols 700 9988 or --symbols AAPL,MSFT)")
    symbols: list[Symbol] = []
    for text in (t for chunk in symbols_text for t in chunk.split(",") if t.strip()):
        try:
            symbol = parse_symbol(text)
        except SymbolError as exc:
            raise DownloadUsageError(f"--symbols: {exc}") from None
        if symbol.market is not market:
            raise DownloadUsageError(f"--symbols: {symbol} is not a {market.value} symbol; "
                                     f"add --market {symbol.market.value.lower()} to download it")
        if symbol not in symbols:
            symbols.append(symbol)
    days = []
    for flag, text in (("--from", start_text), ("--to", end_text)):
        if not text:
            raise DownloadUsageError(f"--download needs {flag} YYYY-MM-DD")
        try:
            days.append(date.fromisoformat(text))
        except ValueError:
            raise DownloadUsageError(f"{flag} {text!r} is not a date; expected YYYY-MM-DD") from None
    if days[0] > days[1]:
        raise DownloadUsageError(f"--from {days[0]} is after --to {days[1]}; nothing to download")
    try:
        sessions = calendar.sessions_between(days[0], days[1])
    except ValueError as exc:
        raise DownloadUsageError(str(exc)) from None
    if not sessions:
        raise DownloadUsageError(f"no {market.value} session between {days[0]} and {days[1]}")
    return symbols, sessions


def _days_in(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return set(pd.read_csv(path, usecols=["datetime"], dtype=str)["datetime"].str[:10])


def _write_month(path: Path, old: Path | None, new: pd.DataFrame, calendar: MarketCalendar) -> int:
    frame = new.copy()
    frame.index = frame.index.tz_convert(calendar.tz)
    text = pd.DataFrame({"datetime": [t.isoformat(sep=" ") for t in frame.index],
                         **{c: frame[c].to_numpy() for c in BAR_COLUMNS}})
    if old is not None and old.exists():
        text = pd.concat([pd.read_csv(old, dtype=str), text.astype(str)], ignore_index=True)
    text = text.drop_duplicates("datetime", keep="first").sort_values("datetime")
    partial = path.with_suffix(".csv.part")
    text.to_csv(partial, index=False)
    partial.replace(path)  # a download stopped while writing never leaves half a file behind
    return len(text)


async def within_quota(broker: Broker, symbols: list[Symbol], say: Callable[[str], None]) -> list[Symbol]:
    """The symbols the broker's history quota leaves room for; the others skipped, one line each."""
    quota = await broker.history_quota()
    if quota is None:
        return symbols
    new = [s for s in symbols if s not in quota.counted]
    say(f"history K-line quota: {quota.used} used, {quota.remaining} remaining; {len(new)} of the "
        f"{len(symbols)} asked code(s) new to it (a code downloaded in the last 30 days costs nothing again)")
    over = new[quota.remaining:]
    for symbol in over:
        say(f"{symbol}: skipped, over the history K-line quota ({quota.remaining} new code(s) remaining, "
            f"{len(new)} asked)")
    return [s for s in symbols if s not in over]


async def choose_feed(broker: Broker, wanted: str, symbol: Symbol, sessions: list[Session],
                      say: Callable[[str], None]) -> str:
    """``iex`` or ``sip`` as asked; ``auto``: SIP unless Alpaca refuses it for this account, then IEX."""
    feeds = cast(HistoryFeeds, broker)
    feeds.use_history_feed("sip" if wanted == "auto" else wanted)
    if wanted == "iex":
        return "iex"
    end = sessions[-1].close
    try:
        await broker.bars(symbol, Timeframe.M1, max(sessions[0].open, end - FEED_PROBE), end)
    except FeedNotPermitted as exc:
        if wanted == "sip":
            raise
        say(f"feed: {exc}; downloading from IEX instead")
        feeds.use_history_feed("iex")
    return feeds.history_feed


async def download(broker: Broker, symbols: list[Symbol], sessions: list[Session], out: Path,
                   calendar: MarketCalendar, say: Callable[[str], None] = print, feed: str | None = None) -> int:
    """``feed``: ``iex``, ``sip`` or ``auto`` for a broker with several (Alpaca), None for one with one."""
    out.mkdir(parents=True, exist_ok=True)
    lots: dict[Symbol, int] = {}
    await broker.connect()
    try:
        allowed = await within_quota(broker, symbols, say)
        failed = [s for s in symbols if s not in allowed]
        if feed is not None and allowed:
            feed = await choose_feed(broker, feed, allowed[0], sessions, say)
        for symbol in allowed:
            if not await _download_symbol(broker, symbol, sessions, out, calendar, say, feed, lots):
                failed.append(symbol)
    finally:
        await broker.close()
    if lots:
        path = out / LOTS_FILE
        known = read_lots(path) if path.exists() else {}
        write_lots(path, {**known, **lots})
        say(f"board lots from the broker: {', '.join(f'{s.short} {n}' for s, n in sorted(lots.items()))} -> {path}")
    return EXIT_FAILED if failed else EXIT_OK


async def _download_symbol(broker: Broker, symbol: Symbol, sessions: list[Session], out: Path,
                           calendar: MarketCalendar, say: Callable[[str], None], feed: str | None,
                           lots: dict[Symbol, int]) -> bool:
    """One symbol's missing sessions, month by month; False when the broker does not know it."""
    try:
        snapshot = (await broker.snapshots([symbol]))[symbol]
    except UnknownSymbol as exc:
        say(f"{symbol}: the broker does not know this symbol ({exc}); skipped")
        return False
    if symbol.market is Market.HK:
        lots[symbol] = snapshot.lot_size
    by_month: dict[str, list[Session]] = defaultdict(list)
    for s in sessions:
        by_month[f"{s.day:%Y-%m}"].append(s)
    fetched = had = bars = 0
    for month, month_sessions in by_month.items():
        path = month_file(out, symbol, month)
        there = _days_in(path)
        missing = [s for s in month_sessions if s.day.isoformat() not in there]
        had += len(month_sessions) - len(missing)
        if not missing:
            continue
        try:
            frame = await broker.bars(symbol, Timeframe.M1, missing[0].open, missing[-1].close)
        except UnknownSymbol as exc:
            say(f"{symbol}: the broker does not know this symbol ({exc}); skipped")
            return False
        inside = pd.Series(False, index=frame.index)
        for s in missing:
            inside |= (frame.index >= s.open) & (frame.index < s.close)
        frame = frame[inside.to_numpy()]
        if not frame.empty:
            _write_month(path, path, frame, calendar)
        bars += len(frame)
        fetched += len({d for d in frame.index.tz_convert(calendar.tz).date})
        say(f"{symbol}: {month} {'#' * len(missing)} {len(missing)} session(s) asked, {len(frame):,} bars")
    empty = len(sessions) - had - fetched
    source = f", {feed.upper()} feed" if feed else ""
    say(f"{symbol}: {fetched} session(s) downloaded ({bars:,} bars{source}), {had} already there"
        + (f", {empty} without bars at the broker" if empty else "") + f" -> {out}")
    return True


def run_download(args, settings, calendar: MarketCalendar, clock) -> int:
    from config.settings import PROJECT_DIR
    from runner.run import build_broker

    market = settings.profile.market
    kind = settings.secrets.broker_for(market)
    feed = (getattr(args, "feed", None) or "auto") if kind == "alpaca" else None
    try:
        if kind == "paper":
            need = "MOOMOO_HOST (and OpenD running)" if market is Market.HK else "ALPACA_API_KEY and ALPACA_SECRET_KEY"
            raise DownloadUsageError(f"--download reads bars from the broker: set {need} (paper keys suffice)")
        symbols, sessions = parse_request(args.symbols, args.date_from, args.date_to, market, calendar)
    except DownloadUsageError as exc:
        print(f"download: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out or PROJECT_DIR / "data" / "downloads" / market.value.lower()).expanduser()
    print(f"Catalyst download {market.value}: {', '.join(s.short for s in symbols)}, {len(sessions)} session(s) "
          f"{sessions[0].day} to {sessions[-1].day}, 1-minute bars from {kind}"
          + (f" ({feed} feed)" if feed else "") + f" into {out}")
    try:
        broker = build_broker(kind, settings, clock, calendar, live=False)
        return clock.run(download(broker, symbols, sessions, out, calendar, feed=feed))
    except FeedNotPermitted as exc:
        print(f"download failed: {exc}; the account's data subscription does not include SIP for these dates: "
              f"--feed iex (or auto) downloads from IEX", file=sys.stderr)
        return EXIT_FAILED
    except BrokerError as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"download failed: {out}: {exc}", file=sys.stderr)
        return EXIT_FAILED
