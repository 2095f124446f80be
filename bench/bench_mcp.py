"""How fast the consciousness MCP server answers Big Bro on a busy database.

Run: ``.venv/bin/python -m bench.bench_mcp`` (or ``make bench``). Prints figures; never fails on them.

An embedded PostgreSQL in a temporary folder is filled with 10,000 messages (the agents' events to
Big Bro over a week, some unread) and 1,000 positions of the two trading agents (300 open with
their monitor rows, 700 closed, half of them today), plus cycles and LLM usage. Then
``python consciousness_mcp.py`` is started as Claude Desktop starts it (stdio, the SDK's client)
and each tool below is called 30 times after one warm-up call: wall milliseconds per call as the
client sees them (JSON-RPC over the pipes included). Target: ``get_trading_overview`` under 100 ms.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

MESSAGES = 10_000
POSITIONS = 1_000
OPEN_POSITIONS = 300
CALLS = 30
TARGET_MS = 100.0

FILL = """
INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data, status, created_at)
SELECT CASE WHEN i % 3 = 0 THEN 'public_claude' ELSE 'intl_claude' END, 'big_bro', 'notification',
       (ARRAY['low','normal','normal','high','urgent'])[1 + i % 5],
       'Event ' || i, 'Body of event ' || i || ' with a few words of detail for people to read.',
       jsonb_build_object('event', (ARRAY['ENTRY','MONITOR_STARTED','SIGNAL','EXIT','MONITOR_ENDED','CYCLE_SUMMARY',
                                          'MONITOR_ERROR','RECONCILE'])[1 + i % 8], 'symbol', 'HK.' || lpad((i % 500)::text, 5, '0')),
       CASE WHEN i % 7 = 0 THEN 'pending' ELSE 'read' END,
       now() - make_interval(secs => i * 60)
FROM generate_series(1, {messages}) AS i;

INSERT INTO positions (agent_id, market, symbol, side, quantity, entry_price, entry_time, trading_day, stop_price,
                       target_price, tier, status, exit_price, exit_time, exit_reason, exit_type, realized_pnl,
                       realized_pnl_pct, backstop_status)
SELECT CASE WHEN i % 2 = 0 THEN 'intl_claude' ELSE 'public_claude' END,
       CASE WHEN i % 2 = 0 THEN 'HK' ELSE 'US' END,
       CASE WHEN i % 2 = 0 THEN 'HK.' || lpad(i::text, 5, '0') ELSE 'US.S' || i END,
       'long', 100 * (1 + i % 5), 10 + (i % 50), now() - interval '3 hours', (now() AT TIME ZONE 'Asia/Hong_Kong')::date,
       9 + (i % 50), 12 + (i % 50), 2,
       CASE WHEN i <= {open} THEN 'open' ELSE 'closed' END,
       CASE WHEN i <= {open} THEN NULL ELSE 10.5 + (i % 50) END,
       CASE WHEN i <= {open} THEN NULL ELSE now() - make_interval(hours => (i % 2) * 30) END,
       CASE WHEN i <= {open} THEN NULL ELSE (ARRAY['stop_loss','take_profit','signals','market_close'])[1 + i % 4] END,
       CASE WHEN i <= {open} THEN NULL ELSE 'signals' END,
       CASE WHEN i <= {open} THEN NULL ELSE (i % 9) * 10 - 30 END,
       CASE WHEN i <= {open} THEN NULL ELSE (i % 9) - 3 END,
       'placed'
FROM generate_series(1, {positions}) AS i;

INSERT INTO monitor_status (position_id, agent_id, symbol, status, owner, lease_expires_at, started_at, last_check_at,
                            last_price, pnl_pct, signals, decision, updated_at)
SELECT position_id, agent_id, symbol, CASE WHEN position_id % 10 = 0 THEN 'stopped' ELSE 'running' END, 'bench',
       now() + interval '2 minutes', now() - interval '3 hours', now(), entry_price * 1.01, 1.0, '[]'::jsonb, 'HOLD', now()
FROM positions WHERE status = 'open';

INSERT INTO cycles (cycle_id, agent_id, market, mode, brain, started_at, completed_at, status, trades_executed)
SELECT 'bench_' || i, CASE WHEN i % 2 = 0 THEN 'intl_claude' ELSE 'public_claude' END,
       CASE WHEN i % 2 = 0 THEN 'HK' ELSE 'US' END, 'trade', 'claude', now() - make_interval(hours => i),
       now() - make_interval(hours => i) + interval '2 minutes', 'completed', i % 3
FROM generate_series(1, 300) AS i;

INSERT INTO api_usage (agent_id, trading_day, purpose, model, input_tokens, output_tokens, cost_usd, created_at)
SELECT CASE WHEN i % 2 = 0 THEN 'intl_claude' ELSE 'public_claude' END, (now() AT TIME ZONE 'Asia/Hong_Kong')::date,
       'decision', 'claude-sonnet-4-6', 3000, 400, 0.0150, now()
FROM generate_series(1, 200) AS i;
"""


async def _fill(url: str) -> None:
    import asyncpg

    from store.db import Database

    db = await Database(url, "bench").connect()
    try:
        await db.migrate("trading")
        await db.migrate("research")
    finally:
        await db.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(FILL.format(messages=MESSAGES, open=OPEN_POSITIONS, positions=POSITIONS))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _measure(url: str, tmp: Path) -> tuple[dict[str, list[float]], dict]:
    from mcp import Client, StdioServerParameters, stdio_client

    from config.settings import ENV_VARS

    env = {**{v: "" for v in ENV_VARS}, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(tmp / "var"),
           "CATALYST_LOG_DIR": str(tmp / "logs")}
    params = StdioServerParameters(command=sys.executable, args=[str(PROJECT / "consciousness_mcp.py")], env=env,
                                   cwd=str(PROJECT))
    calls = {
        "get_trading_overview": {},
        "get_all_positions": {},
        "get_messages": {"unread": True, "limit": 20},
        "consciousness_summary": {},
        "get_agent_status": {"agent_id": "intl_claude"},
    }
    timings: dict[str, list[float]] = {}
    seen = {}
    with open(os.devnull, "w") as quiet:  # the server's start-up line is not a figure
        async with Client(stdio_client(params, errlog=quiet)) as client:
            for name, args in calls.items():
                first = await client.call_tool(name, args)
                if first.is_error:
                    raise RuntimeError(f"{name}: {first.content[0].text}")
                if name == "get_trading_overview":
                    seen = json.loads(first.content[0].text)["live_totals"]
                samples = []
                for _ in range(CALLS):
                    start = time.perf_counter()
                    await client.call_tool(name, args)
                    samples.append((time.perf_counter() - start) * 1000)
                timings[name] = samples
    return timings, seen


def main() -> None:
    from store.db import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="catalyst-bench-mcp-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        url = server.start()
        try:
            asyncio.run(_fill(url))
            timings, seen = asyncio.run(_measure(url, Path(tmp)))
        except Exception as exc:  # noqa: BLE001 - a bench prints figures, it never fails
            print(f"MCP server: no figures ({type(exc).__name__}: {exc})")
            return
        finally:
            server.stop()
    print(f"database: {MESSAGES:,} messages, {POSITIONS:,} positions ({OPEN_POSITIONS} open, monitored), "
          f"300 cycles; {CALLS} calls each over stdio after a warm-up")
    print("  the overview saw: " + "; ".join(f"{m} {t['open_positions']} open, {t['closed_trades']} closed today"
                                          for m, t in sorted(seen.items())))
    for name, samples in timings.items():
        ordered = sorted(samples)
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        mark = ""
        if name == "get_trading_overview":
            mark = f"  (target < {TARGET_MS:.0f} ms: {'met' if statistics.median(samples) < TARGET_MS else 'MISSED'})"
        print(f"  {name:<24} median {statistics.median(samples):6.1f} ms  p95 {p95:6.1f} ms  max {ordered[-1]:6.1f} ms{mark}")


if __name__ == "__main__":
    main()
