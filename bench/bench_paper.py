"""How fast the paper exchange replays one HK session of the whole sample universe.

Run: ``.venv/bin/python bench/bench_paper.py``. Prints figures; never fails on them.
The universe is 09988 plus the seeded synthetic universe of ``data/universe.py`` when it exists,
else 09988 repeated under synthetic codes. Only the exchange is timed (wall time): building the
universe is reported apart.
"""
from __future__ import annotations

import sys
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from brokers.base import OrderRequest, OrderType  # noqa: E402
from brokers.paper import PaperExchange  # noqa: E402
from core.clock import SimClock  # noqa: E402
from config.settings import Profile  # noqa: E402
from data.bars import BarSeries, load_samples  # noqa: E402
from data.calendar import MarketCalendar, Session  # noqa: E402
from core.instruments import Market, OrderSide, Symbol, Rounding, round_to_tick  # noqa: E402

SESSION_DAY = date(2022, 6, 15)   # the last full session of the real 09988 bars


def sample_universe(profile: Profile, calendar: MarketCalendar, session: Session) -> tuple[dict[Symbol, BarSeries], str]:
    real = load_samples(Market.HK)
    try:
        from data.universe import build_universe
    except ImportError:
        return _copies_of_09988(real, profile.paper.universe_size), "09988 repeated under synthetic codes"
    synthetic = build_universe(Market.HK, profile.paper.universe_seed, profile.paper.universe_size, [session], calendar)
    return {**real, **synthetic}, "09988 + data/universe.py synthetic universe"


def _copies_of_09988(real: dict[Symbol, BarSeries], count: int) -> dict[Symbol, BarSeries]:
    source = real[Symbol(Market.HK, "09988")]
    copies = {}
    for i in range(count):
        symbol = Symbol(Market.HK, f"{99900 + i:05d}")
        copies[symbol] = BarSeries(symbol, f"SYNTH copy {i}", source.lot_size, True, source.minute, source.daily)
    return copies


def replay_seconds(series: dict[Symbol, BarSeries], profile: Profile, calendar: MarketCalendar, session: Session, busy: bool) -> tuple[float, int]:
    """Wall seconds to build the exchange and replay the session; quotes pushed."""
    clock = SimClock(session.open)
    pushed = [0]

    def count(_quote) -> None:
        pushed[0] += 1

    async def replay() -> None:
        exchange = PaperExchange(series, clock, calendar, profile)
        if busy:
            exchange.subscribe_quotes(list(series), count)
            snapshots = await exchange.snapshots(list(series))
            for n, (symbol, snap) in enumerate(snapshots.items()):
                far_below = round_to_tick(Market.HK, snap.quote.price * Decimal("0.9"), session.day, Rounding.DOWN)
                await exchange.place_order(OrderRequest(symbol, OrderSide.BUY, snap.lot_size, OrderType.LIMIT, f"bench-{n}", limit_price=far_below))
        await exchange.run(session.close)

    started = time.perf_counter()
    clock.run(replay())
    return time.perf_counter() - started, pushed[0]


def main() -> None:
    calendar = MarketCalendar(Market.HK)
    profile = Profile(market=Market.HK, agent_id="bench")
    session = calendar.session(SESSION_DAY)
    assert session is not None
    started = time.perf_counter()
    series, label = sample_universe(profile, calendar, session)
    built = time.perf_counter() - started
    bars = sum(len(s.minute.loc[session.open:session.close]) for s in series.values())
    print(f"universe: {len(series)} symbols ({label}), {bars} one-minute bars on {SESSION_DAY}, built in {built:.2f} s")
    for busy, what in ((False, "exchange alone"), (True, "with a quote subscriber and a resting limit order per symbol")):
        seconds, pushed = replay_seconds(series, profile, calendar, session, busy)
        print(f"{what}: {seconds:.3f} s wall, {bars / seconds:,.0f} bars/s, {4 * bars / seconds:,.0f} steps/s, {pushed} quotes pushed")


if __name__ == "__main__":
    main()
