"""The agent's two costs a trader pays: LLM tokens per Claude cycle, and the machine for a run.

Run: ``.venv/bin/python -m bench.bench_agent``. Prints figures; never fails on them.

1. A Claude cycle against the fake Messages API (tests/fakes/fake_anthropic.py, the real SDK):
   a scripted cycle as a model would run it (portfolio, scan, quotes, technicals, patterns, news,
   risk check, entry, a logged skip) on the bundled sample session. Per cycle: requests, input
   tokens (input + cache write + cache read), the share of input read from the prompt cache on
   turns 2 and later (target >= 80%), and the median tool-result size (target <= 1.5 KB).
   Token counts are the fake's (about 4 characters a token), cache accounting as the real API's.
2. The `make run` equivalent: ``agent.py --force`` in a subprocess (rules brain, embedded
   PostgreSQL in a temporary folder): wall time, peak RSS of the agent process (target <= 400 MB;
   the PostgreSQL server is a separate process, not counted), and the time from launch to the
   first tool call.
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

FIRST_TOOL_MARK = "BENCH-FIRST-TOOL-CALL"
CACHE_TARGET = 0.80
TOOL_RESULT_TARGET = 1536
RSS_TARGET_MB = 400


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without Catalyst settings; every variable .env could set is blanked (offline, paper)."""
    from config.settings import ENV_VARS

    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALYST") and k not in ENV_VARS}
    env.update({var: "" for var in ENV_VARS})
    env.update(extra)
    return env


# --- 1. a Claude cycle -----------------------------------------------------------------------------------
def _cycle_plan(planned, second: str):
    from tests.fakes.fake_anthropic import reply, text
    from tests.fakes.scripted_trader import call, calls

    p = planned.symbol
    return [
        call("get_portfolio"),
        call("scan_market", index="ALL", limit=10, min_volume_ratio=1.3),
        calls(("get_quote", {"symbol": p}), ("get_quote", {"symbol": second})),
        calls(("get_technicals", {"symbol": p, "timeframe": "5m"}), ("get_technicals", {"symbol": second, "timeframe": "5m"})),
        call("detect_patterns", symbol=p, timeframe="5m"),
        call("get_news", symbol=p, hours=24),
        call("check_risk", **planned.risk_input()),
        call("execute_trade", **planned.trade_input()),
        call("log_decision", decision="skip", symbol=second, reasoning="RSI too high for tier 2; no pattern"),
        reply(text("One tier-2 entry placed with a broker-side stop; one candidate skipped.")),
    ]


def claude_cycle() -> dict:
    import agent
    from config.settings import load_profile, profile_path
    from core.costs import Usage, cost_usd
    from tests.fakes.fake_anthropic import FakeAnthropic
    from tests.fakes.scripted_trader import ScriptedTrader, pick_entry

    profile = load_profile(profile_path("hk"), {})
    planned = pick_entry(profile)
    second = "HK.09988" if planned.symbol != "HK.09988" else "HK.99900"
    trader = ScriptedTrader([_cycle_plan(planned, second), [call_portfolio()]])
    fake = FakeAnthropic(api_key="bench").start()
    fake.script([trader] * 200)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="catalyst-bench-") as var, contextlib.redirect_stdout(io.StringIO()):
            code = agent.main(["--force"], env=_clean_env(ANTHROPIC_API_KEY="bench", ANTHROPIC_BASE_URL=fake.base_url,
                                                          CATALYST_VAR_DIR=var))
    finally:
        fake.stop()
    wall = time.perf_counter() - started
    decision_model = profile.models.decision
    by_body = {id(b): r for b, r in zip(fake.requests, fake.responses)}  # every request got a 200 here
    cycles = []
    for bodies in trader.decision_bodies:
        usages = [by_body[id(b)]["usage"] for b in bodies if id(b) in by_body]
        later = usages[1:]
        prompt_later = sum(u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"] for u in later)
        read_later = sum(u["cache_read_input_tokens"] for u in later)
        sizes = [len(_result_text(block).encode()) for body in bodies for block in _tool_results(body)]
        cycles.append({
            "requests": len(bodies),
            "input_tokens": sum(u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"] for u in usages),
            "uncached_input": sum(u["input_tokens"] for u in usages),
            "cache_write": sum(u["cache_creation_input_tokens"] for u in usages),
            "cache_read": sum(u["cache_read_input_tokens"] for u in usages),
            "output_tokens": sum(u["output_tokens"] for u in usages),
            "cache_share_later": (read_later / prompt_later) if prompt_later else None,
            "tool_results": len(sizes),
            "median_result": statistics.median(sizes) if sizes else 0,
            "max_result": max(sizes, default=0),
            "cost_usd": sum((cost_usd(Usage.from_anthropic(u), decision_model) for u in usages), Decimal(0)),
        })
    return {"exit": code, "wall": wall, "cycles": cycles, "haiku_calls": len(trader.haiku_bodies),
            "planned": planned.symbol}


def call_portfolio():
    from tests.fakes.scripted_trader import call

    return call("get_portfolio")


def _tool_results(body: dict) -> list[dict]:
    last = body["messages"][-1]["content"]
    return [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] if isinstance(last, list) else []


def _result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content)
    return content or ""


# --- 2. make run -------------------------------------------------------------------------------------------
def child_make_run() -> None:
    """In the subprocess: ``agent.py --force``, marking the first tool call on stdout."""
    import agent
    import tool_executor

    original = tool_executor.ToolExecutor.run
    marked = []

    async def run(self, name, raw_input):
        if not marked:
            marked.append(name)
            print(f"{FIRST_TOOL_MARK} {name}", flush=True)
        return await original(self, name, raw_input)

    tool_executor.ToolExecutor.run = run
    sys.exit(agent.main(["--force"]))


def make_run() -> dict:
    with tempfile.TemporaryDirectory(prefix="catalyst-bench-") as var:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", "import bench.bench_agent as b; b.child_make_run()"], cwd=PROJECT,
            env=_clean_env(CATALYST_VAR_DIR=var, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        first_tool = None
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(FIRST_TOOL_MARK) and first_tool is None:
                first_tool = time.perf_counter() - started
                continue
            lines.append(line.rstrip("\n"))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else ""
    return {
        "exit": proc.returncode, "wall": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "first_tool": first_tool,
        "entries": sum(1 for line in lines if line.strip().startswith("ENTRY ")),
        "exits": sum(1 for line in lines if line.strip().startswith("EXIT ")),
        "stderr_tail": err.strip().splitlines()[-3:],
    }


# --- report ------------------------------------------------------------------------------------------------
def _verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " ABOVE TARGET")


def main() -> None:
    print("Claude cycle against the fake Messages API (scripted; the real SDK; sample session 2022-06-15)")
    try:
        c = claude_cycle()
    except Exception as exc:  # noqa: BLE001 - a bench reports, never fails
        print(f"  failed: {type(exc).__name__}: {exc}")
    else:
        print(f"  run: exit {c['exit']}, {c['wall']:.1f} s wall, entry in {c['planned']}, {c['haiku_calls']} Haiku consult(s)")
        for n, cy in enumerate(c["cycles"], 1):
            share = cy["cache_share_later"]
            share_text = "n/a (one request)" if share is None else f"{share:.0%}"
            print(f"  cycle {n}: {cy['requests']} requests, {cy['input_tokens']:,} input tokens "
                  f"({cy['uncached_input']:,} uncached, {cy['cache_write']:,} cache write, {cy['cache_read']:,} cache read), "
                  f"{cy['output_tokens']:,} output, USD {cy['cost_usd']:.4f}")
            print(f"           cache share of input on turns 2+: {share_text} (target >= {CACHE_TARGET:.0%})"
                  f"{_verdict(None if share is None else share >= CACHE_TARGET)}")
            if cy["tool_results"]:
                print(f"           tool results: {cy['tool_results']}, median {cy['median_result']:,.0f} B, max "
                      f"{cy['max_result']:,} B (target median <= {TOOL_RESULT_TARGET / 1024:.1f} KB)"
                      f"{_verdict(cy['median_result'] <= TOOL_RESULT_TARGET)}")
    print("make run equivalent (agent.py --force in a subprocess; rules brain; embedded PostgreSQL)")
    try:
        m = make_run()
    except Exception as exc:  # noqa: BLE001
        print(f"  failed: {type(exc).__name__}: {exc}")
        return
    first = "never" if m["first_tool"] is None else f"{m['first_tool']:.1f} s"
    print(f"  exit {m['exit']}, wall {m['wall']:.1f} s, time to the first tool call {first}, "
          f"{m['entries']} entries / {m['exits']} exits")
    print(f"  peak RSS of the agent process {m['peak_rss_mb']:.0f} MB (target <= {RSS_TARGET_MB} MB)"
          f"{_verdict(m['peak_rss_mb'] <= RSS_TARGET_MB)}")
    if m["exit"] != 0 and m["stderr_tail"]:
        print("  stderr: " + " | ".join(m["stderr_tail"]))


if __name__ == "__main__":
    main()
