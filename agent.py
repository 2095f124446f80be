#!/usr/bin/env python3
"""Catalyst: the command line and the run.

    python agent.py [--market hk|us] [--mode trade|close|heartbeat|status] [--force] [--live]
                    [--brain claude|rules] [--config PATH]
                    [--download --symbols ... --from D --to D [--out DIR] [--feed iex|sip|auto]]
                    [--replay PATH [--from D] [--to D] [--tz ZONE] [--min-coverage SHARE] [--compare [--seed N]] [--jobs N]]
    python agent.py --mode report [--market hk|us] [--day D] [--days N]

Exit codes: 0 done or skipped; 1 the run failed; 2 bad usage or configuration; 3 refused for safety.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Sequence


from core.clock import Clock, WallClock
from config.settings import (
    PROJECT_DIR, ConfigError, Profile, Secrets, live_env_note, load_profile, load_secrets, profile_path, read_environment,
)
from data.calendar import CalendarRangeError, MarketCalendar
from ops.logsetup import setup_logging
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED

log = logging.getLogger("catalyst")



DEFAULT_MARKET = "hk"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep one clear line
        self.exit(EXIT_USAGE, f"agent.py: {message} (see --help)\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="agent.py", description="Catalyst day-trading agent")
    p.add_argument("--market", choices=["hk", "us"],
                   help="market profile (config/<market>.yaml; default hk, or the market of --config)")
    p.add_argument("--mode", choices=["trade", "close", "heartbeat", "status", "report"], default="trade")
    p.add_argument("--force", action="store_true", help="run even when no session is open")
    p.add_argument("--live", action="store_true", help="trade real money (the profile must also say live: true)")
    p.add_argument("--brain", choices=["claude", "rules"], help="decision maker (default: claude with a key, else rules)")
    p.add_argument("--config", type=Path, help="another profile file")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument("--replay", type=Path, metavar="PATH", help="replay historical bars (CSV file or folder)")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD")
    p.add_argument("--compare", action="store_true",
                   help="with --replay: re-exit the same entries under each exit policy, side by side")
    p.add_argument("--seed", type=int, metavar="N", help="with --compare: the random control's seed (default 1)")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="with --mode report: the trading day (default: the latest)")
    p.add_argument("--days", type=int, metavar="N", help="with --mode report: add the performance over N trading days")
    p.add_argument("--download", action="store_true",
                   help="download 1-minute bars from the broker in the replay's format (with --symbols, --from, --to)")
    p.add_argument("--symbols", nargs="+", metavar="CODE", help="with --download: the symbols (700 9988, or AAPL,MSFT)")
    p.add_argument("--out", type=Path, metavar="DIR", help="with --download: the folder (default data/downloads/<market>)")
    p.add_argument("--feed", choices=["iex", "sip", "auto"],
                   help="with --download --market us: Alpaca's feed (default auto: SIP, IEX when the account has no SIP)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="with --replay: split the sessions into N date ranges replayed in N processes, one report")
    p.add_argument("--tz", metavar="ZONE", help="with --replay: the time zone of naive bar times (default: the market's)")
    p.add_argument("--min-coverage", dest="min_coverage", metavar="SHARE",
                   help="with --replay: leave out sessions with less of their bars than this (0.9 or 90%%; default: none)")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Settings:
    profile: Profile
    secrets: Secrets
    profile_file: Path
    label: str | None = None  # "demo" or "replay": a run that is not the live agent says so in what it posts

    @property
    def var_dir(self) -> Path:
        return self.secrets.var_dir


def load_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """The profile of ``--config`` or ``--market`` (both given: they must agree), the secrets, and
    the broker they configure for the profile's market (half-configured: refused)."""
    market = args.market or DEFAULT_MARKET
    path = args.config or profile_path(market)
    profile = load_profile(path, env)
    if (args.market or args.config is None) and profile.market.value.lower() != market:
        raise ConfigError(f"{path}: market: {profile.market.value} does not match --market {market}")
    _check_news_context(profile)
    secrets = load_secrets(env)
    _check_database_urls(env)
    secrets.broker_for(profile.market)
    return Settings(profile, secrets, path)


def _check_database_urls(env: Mapping[str, str]) -> None:
    """A URL the driver cannot read is a configuration error at start, not a traceback at connect."""
    urls = {var: env[var].strip() for var in ("DATABASE_URL", "RESEARCH_DATABASE_URL") if env.get(var, "").strip()}
    if not urls:
        return
    from store.db import url_problem

    for var, url in urls.items():
        problem = url_problem(url)
        if problem:
            raise ConfigError(f"environment variable {var}: {problem}")


def _check_news_context(profile: Profile) -> None:
    """A broken catalyst lexicon is a configuration error at start, not a failure mid-cycle."""
    from news.sentiment import NewsContextError, load_lexicon

    try:
        load_lexicon(profile.news.context_file)
    except NewsContextError as exc:
        raise ConfigError(f"configuration error: {exc}") from None


def flags_that_do_nothing(args: argparse.Namespace) -> str | None:
    """A flag the chosen mode would silently ignore: refused, so that nobody believes it acted."""
    if (args.symbols or args.out) and not args.download:
        return "--symbols and --out only go with --download"
    if args.feed and not (args.download and args.market == "us"):
        return "--feed only goes with --download --market us (Alpaca's data feed; Moomoo has one)"
    if args.download and args.replay is not None:
        return "--download and --replay are two runs: download first, then --replay the folder"
    if (args.date_from or args.date_to) and args.replay is None and not args.download:
        return "--from and --to only go with --replay PATH"
    if args.json and args.mode != "status":
        return "--json only goes with --mode status"
    if args.compare and args.replay is None:
        return "--compare only goes with --replay PATH"
    if args.seed is not None and not args.compare:
        return "--seed (the random control's) only goes with --replay PATH --compare"
    if (args.day or args.days is not None) and args.mode != "report":
        return "--day and --days only go with --mode report"
    if (args.tz or args.min_coverage) and args.replay is None:
        return "--tz and --min-coverage only go with --replay PATH"
    if args.jobs != 1 and (args.replay is None or args.compare or args.jobs < 1):
        return ("--jobs N only goes with --replay PATH, without --compare, and N is 1 or more" if args.jobs >= 1
                else f"--jobs {args.jobs}: give 1 or more processes")
    if args.replay is not None and args.mode != "trade":
        return f"--replay runs trading sessions; it does not go with --mode {args.mode}"
    return None


# Long: the command line's checks in the order a user meets them (flags, profile, keys, --live), then the mode.
def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, clock: Clock | None = None) -> int:
    args = parse_args(argv)
    misplaced = flags_that_do_nothing(args)
    if misplaced:
        print(f"agent.py: {misplaced} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    env = read_environment(env)
    try:
        settings = load_settings(args, env)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    args.market = settings.profile.market.value.lower()  # --config alone: its market
    profile = settings.profile
    if args.brain == "claude" and not settings.secrets.anthropic_api_key and args.mode not in ("status", "report"):
        print("agent.py: --brain claude needs ANTHROPIC_API_KEY (in the environment or .env, see .env.example)",
              file=sys.stderr)
        return EXIT_USAGE
    note = live_env_note(env, settings.profile_file)
    if note:
        print(note, file=sys.stderr)
    if args.live and not profile.live:
        print(
            f"refused: --live needs the profile to say `live: true` too ({settings.profile_file}); "
            "nothing was traded",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    if profile.live and not args.live and args.mode not in ("status", "report"):
        print(f"note: {settings.profile_file} says live: true but --live was not given; trading on paper", file=sys.stderr)
    unwritable = prepare_folders(args, settings, env)
    if unwritable:
        print(unwritable, file=sys.stderr)
        return EXIT_USAGE
    clock = clock or WallClock()
    calendar = MarketCalendar(profile.market)
    try:
        return run_mode(args, settings, calendar, clock, env)
    except CalendarRangeError as exc:  # the installed exchange-calendars ends before the day asked about
        print(f"calendar: {exc}: nothing was run", file=sys.stderr)
        return EXIT_USAGE


def prepare_folders(args: argparse.Namespace, settings: Settings, env: Mapping[str, str]) -> str | None:
    """The log folder (its file opened) and, where this run writes there, the var folder: made and
    proven writable, or the one line that says which cannot be written."""
    log_dir = Path(env.get("CATALYST_LOG_DIR") or PROJECT_DIR / "logs").expanduser()
    try:
        setup_logging(log_dir, settings.secrets.secret_values())
    except OSError as exc:
        return f"log folder {log_dir} cannot be written ({_why(exc)}); fix it or point CATALYST_LOG_DIR elsewhere"
    if _writes_var(args, settings):
        try:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=settings.var_dir).close()
        except OSError as exc:
            return (f"var folder {settings.var_dir} cannot be written ({_why(exc)}); "
                    "fix it or point CATALYST_VAR_DIR elsewhere")
    return None


def _writes_var(args: argparse.Namespace, settings: Settings) -> bool:
    """Trading runs keep their outbox there; any run without DATABASE_URL its embedded PostgreSQL."""
    if args.download:
        return False
    return args.mode not in ("status", "report") or settings.secrets.database_url is None


def _why(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def run_mode(args: argparse.Namespace, settings: Settings, calendar: MarketCalendar, clock: Clock,
             env: Mapping[str, str]) -> int:
    profile = settings.profile
    if args.mode == "status":
        hint = None
        if settings.secrets.broker_for(profile.market) == "paper":
            from runner.demo import demo_settings

            if args.force:  # what `--force` runs without a broker: the demo's records
                settings = demo_settings(settings)
            else:
                hint = (f"(no broker configured: the sample sessions of `make run` / `--force` are recorded under "
                        f"agent id {demo_settings(settings).profile.agent_id}; `agent.py --mode status --force` shows them)")
            # No live broker: nothing of this agent trades real money, whatever the profile says.
            settings = replace(settings, profile=settings.profile.model_copy(update={"live": False}))
        return clock.run(run_status(settings, calendar, clock, as_json=args.json, hint=hint))
    if args.mode == "report":
        from runner.daily_report import run_report

        if settings.secrets.broker_for(profile.market) == "paper":  # no broker: the demo is what traded
            from runner.demo import demo_settings

            settings = demo_settings(settings)
            print(f"(no broker configured: reporting the sample sessions recorded under agent id "
                  f"{settings.profile.agent_id})", file=sys.stderr)
        return run_report(args, settings, calendar, clock, env)
    if args.download:
        from runner.download import run_download

        return run_download(args, settings, calendar, clock)
    if args.replay is not None and args.jobs > 1:
        from runner.replay_jobs import run_split_replay

        return run_split_replay(args, settings, calendar, env=env)
    if args.replay is not None:
        from runner.replay import run_replay

        return run_replay(args, settings, calendar, clock=clock, env=env)
    from runner.run import run_agent  # the trading run pulls in brokers and models; status stays light

    return run_agent(args, settings, calendar, clock, env)


async def run_status(settings: Settings, calendar: MarketCalendar, clock: Clock, as_json: bool,
                     hint: str | None = None) -> int:
    from runner.status import build_status, render_status, repair_when_no_run_is_alive
    from store import TradingStore, open_databases
    from store.db import DatabaseError

    secrets = settings.secrets
    try:
        dbs = await open_databases(*secrets.database_urls(), settings.var_dir, secrets.secret_values())
    except DatabaseError as exc:
        print(f"status failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        store = TradingStore(dbs.trading, settings.profile.agent_id, settings.profile.market)
        await repair_when_no_run_is_alive(dbs.trading, store, clock.now())
        where = f"embedded PostgreSQL ({dbs.embedded.data_dir})" if dbs.embedded else dbs.trading.where
        status = await build_status(store, calendar, settings.profile, clock.now(), where)
    finally:
        await dbs.close()
    if as_json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render_status(status, calendar))
        if hint:
            print(hint)
    return EXIT_OK


def cli() -> int:
    """``python agent.py``: main() with the two ways a shell ends a program made quiet and clear."""
    from ops.quiet_pipe import quiet_when_the_reader_leaves

    quiet_when_the_reader_leaves()  # `agent.py ... | head`: the run goes on, its output goes nowhere
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C before or after the run's own handler (which stops it cleanly)
        print("interrupted (SIGINT); the next run or heartbeat picks up whatever was left open", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(cli())
