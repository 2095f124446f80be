"""The profile: every number the program uses, validated, immutable.

Defaults follow the project's specification. A profile file (``config/hk.yaml``, ``config/us.yaml``) overrides them;
environment variables ``CATALYST__SECTION__KEY=value`` override the file. Unknown keys, wrong
types and out-of-range values are refused with one message naming the file, the key, the bad
value and what is allowed (``ConfigError``; the CLI exits 2).

Secrets and URLs never live in profiles: they come from the environment and ``.env``
(``Secrets``), and their values never appear in any message.
"""
from __future__ import annotations

import os
import re
from datetime import date, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from core.instruments import Market

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_DIR = CONFIG_DIR.parent
ENV_PREFIX = "CATALYST__"
# What an agent or person id in Big Bro's tables looks like (claude_messages.from_agent is VARCHAR(50)).
AGENT_ID = re.compile(r"^[a-z][a-z0-9_.-]{1,49}$")


class ConfigError(Exception):
    """A profile or environment setting that cannot be used; the message says which and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Pct = Decimal  # a percentage, 2 = 2 %


class Levels(Strict):
    """Thresholds of one exit signal; None means the signal has no such level."""

    strong: float | None = None
    moderate: float | None = None
    weak: float | None = None


class RiskLimits(Strict):
    max_positions: int = Field(5, ge=1, le=50)
    max_position_value: Decimal = Field(Decimal("10000"), gt=0)
    tier3_position_value: Decimal = Field(Decimal("5000"), gt=0)
    min_position_value: Decimal = Field(Decimal("2000"), ge=0)
    max_position_pct_equity: Pct = Field(Decimal("20"), gt=0, le=100)
    max_risk_per_trade_pct: Pct = Field(Decimal("1"), gt=0, le=10)
    max_stop_distance_pct: Pct = Field(Decimal("5"), gt=0, le=50)
    max_entries_per_day: int = Field(25, ge=0, le=500)
    daily_loss_halt_pct: Pct = Field(Decimal("2"), gt=0, le=50)
    daily_loss_warn_pct: Pct = Field(Decimal("1.5"), gt=0, le=50)
    max_price_deviation_pct: Pct = Field(Decimal("3"), gt=0, le=20)
    # The noise floor (docs/exit-quality.md): a stop at least this many one-minute standard
    # deviations, scaled to the expected holding time, and this many ticks below the entry; a target
    # whose gain is at least this multiple of the round-trip costs (fees and the spread).
    noise_hold_minutes: float = Field(60, gt=0, le=390)
    noise_stop_multiple: float = Field(2.5, ge=0, le=20)
    min_stop_ticks: int = Field(3, ge=1, le=100)
    min_target_cost_multiple: Decimal = Field(Decimal("3"), ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "RiskLimits":
        if self.daily_loss_warn_pct > self.daily_loss_halt_pct:
            raise ValueError("daily_loss_warn_pct must not exceed daily_loss_halt_pct")
        if self.tier3_position_value > self.max_position_value:
            raise ValueError("tier3_position_value must not exceed max_position_value")
        return self


class EntryTier(Strict):
    tier: int = Field(ge=1, le=3)
    min_volume_ratio: float = Field(gt=0)
    rsi_min: float = Field(ge=0, le=100)
    rsi_max: float = Field(ge=0, le=100)
    setup: Literal["pattern_and_catalyst", "pattern_or_catalyst", "momentum"]
    min_reward_risk: Decimal = Field(gt=0)
    size_fraction: Decimal = Field(gt=0, le=1)
    min_change_pct: float | None = None
    near_breakout_pct: float | None = None


def _default_tiers() -> tuple[EntryTier, ...]:
    return (
        EntryTier(tier=1, min_volume_ratio=2.0, rsi_min=30, rsi_max=70, setup="pattern_and_catalyst",
                  min_reward_risk=Decimal("2.0"), size_fraction=Decimal("1")),
        EntryTier(tier=2, min_volume_ratio=1.5, rsi_min=30, rsi_max=75, setup="pattern_or_catalyst",
                  min_reward_risk=Decimal("1.5"), size_fraction=Decimal("1"), near_breakout_pct=1.0),
        EntryTier(tier=3, min_volume_ratio=1.3, rsi_min=25, rsi_max=80, setup="momentum",
                  min_reward_risk=Decimal("1.5"), size_fraction=Decimal("0.5"), min_change_pct=3.0),
    )


class EntryPolicy(Strict):
    tiers: tuple[EntryTier, ...] = Field(default_factory=_default_tiers)
    pass_rsi_above: float = Field(80, ge=0, le=100)
    pass_rsi_below: float = Field(20, ge=0, le=100)


class SignalThresholds(Strict):
    stop_loss_pct: Levels = Levels(strong=-3, moderate=-2, weak=-1)
    take_profit_pct: Levels = Levels(strong=8, moderate=5, weak=3)
    trailing_activation_pct: float = Field(3, gt=0)
    trailing_drawdown_pct: Levels = Levels(strong=3, moderate=2)
    rsi_overbought: Levels = Levels(strong=85, moderate=75, weak=70)
    volume_dying_ratio: Levels = Levels(strong=0.25, moderate=0.40, weak=0.60)
    market_close_minutes: Levels = Levels(strong=10, moderate=30, weak=60)
    lunch_break_minutes: Levels = Levels(strong=10, moderate=30)
    time_stop_minutes: Levels = Levels(strong=120, moderate=90, weak=60)
    time_stop_flat_pct: float = Field(1, gt=0)
    below_vwap_pct: Levels = Levels(moderate=2, weak=0)
    below_ema9_pct: Levels = Levels(moderate=2, weak=0)
    # Decision rules. "score": SPEC section 7 (STRONG exits; MODERATE counts and the score exit or ask
    # the advisor). "strong_only": only a STRONG signal exits and nothing else is acted on (no advisor
    # consult): where early exits cost money on real data (docs/exit-quality.md, the HK profile).
    exit_rule: Literal["score", "strong_only"] = "score"
    strength_points: dict[Literal["moderate", "weak"], float] = {"moderate": 2.0, "weak": 1.0}
    weights: dict[str, float] = {}
    exit_score: float = Field(6, gt=0)
    exit_moderate_count: int = Field(3, ge=1)
    ask_weak_count: int = Field(3, ge=1)
    exit_moderate_count_without_advisor: int = Field(2, ge=1)


class MonitorSettings(Strict):
    check_interval_seconds: float = Field(300, gt=0, le=3600)
    price_poll_seconds: float = Field(5, gt=0, le=60)
    # Pushes quiet this long (a stream down, reconnecting or stalled): the price guard polls meanwhile.
    quote_stale_seconds: float = Field(10, gt=0, le=300)
    lease_seconds: float = Field(120, ge=10, le=3600)
    lock_check_seconds: float = Field(10, gt=0, le=300)  # a live run proves its agent lock at least this often
    haiku_max_calls_per_position: int = Field(10, ge=0, le=100)
    haiku_min_interval_minutes: float = Field(15, ge=0)
    haiku_timeout_seconds: float = Field(10, gt=0, le=120)
    hold_through_lunch: bool = False
    exit_order_type: Literal["market", "marketable_limit"] = "market"
    marketable_limit_ticks: int = Field(5, ge=1, le=50)
    fill_timeout_paper_seconds: float = Field(30, gt=0, le=600)
    fill_timeout_live_seconds: float = Field(60, gt=0, le=600)
    fill_poll_seconds: float = Field(1, gt=0, le=30)
    retry_delay_seconds: float = Field(5, gt=0, le=300)


class ModelSpec(Strict):
    name: str
    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cache_write_per_mtok: Decimal = Field(ge=0)
    cache_read_per_mtok: Decimal = Field(ge=0)
    max_tokens: int = Field(2048, ge=16, le=20000)


class Models(Strict):
    decision: ModelSpec = ModelSpec(
        name="claude-sonnet-4-6", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
        cache_write_per_mtok=Decimal("3.75"), cache_read_per_mtok=Decimal("0.30"), max_tokens=4096,
    )
    consult: ModelSpec = ModelSpec(
        name="claude-haiku-4-5", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("5"),
        cache_write_per_mtok=Decimal("1.25"), cache_read_per_mtok=Decimal("0.10"), max_tokens=256,
    )
    max_iterations: int = Field(35, ge=1, le=200)
    request_timeout_seconds: float = Field(60, gt=0, le=600)


class Budget(Strict):
    daily_usd: Decimal = Field(Decimal("5"), ge=0)


class Backstop(Strict):
    stop_pct: Pct = Field(Decimal("5"), gt=0, le=50)
    target_pct: Pct = Field(Decimal("10"), gt=0, le=200)


class HKFees(Strict):
    commission_pct: Pct = Field(Decimal("0.03"), ge=0)
    commission_min: Decimal = Field(Decimal("3"), ge=0)
    platform_fee: Decimal = Field(Decimal("0"), ge=0)
    stamp_duty_pct: Pct = Field(Decimal("0.1"), ge=0)
    sfc_levy_pct: Pct = Field(Decimal("0.0027"), ge=0)
    afrc_levy_pct: Pct = Field(Decimal("0.00015"), ge=0)
    trading_fee_pct: Pct = Field(Decimal("0.00565"), ge=0)


class USFees(Strict):
    commission_per_share: Decimal = Field(Decimal("0"), ge=0)
    sec_fee_per_million: Decimal = Field(Decimal("27.80"), ge=0)
    finra_taf_per_share: Decimal = Field(Decimal("0.000166"), ge=0)
    finra_taf_max: Decimal = Field(Decimal("8.30"), ge=0)


class PaperExchange(Strict):
    starting_cash: Decimal = Field(Decimal("1000000"), gt=0)
    spread_ticks: int = Field(1, ge=1, le=20)
    slippage_ticks: int = Field(0, ge=0, le=20)
    max_volume_participation: float = Field(0.25, gt=0, le=1)
    # The demo universe; this seed gives the sample session a few trades (see README).
    universe_seed: int = 4
    universe_size: int = Field(30, ge=0, le=200)
    # Board lots of the symbols in replay data (bar files do not carry them), e.g. {"700": 100}.
    lot_sizes: dict[str, int] = {}

    @field_validator("lot_sizes")
    @classmethod
    def _lots_by_canonical_symbol(cls, lots: dict[str, int]) -> dict[str, int]:
        from core.instruments import parse_symbol

        out = {}
        for code, lot in lots.items():
            if lot < 1:
                raise ValueError(f"the board lot of {code} must be a whole number of shares >= 1, not {lot}")
            out[str(parse_symbol(code))] = lot
        return out


class Schedule(Strict):
    cycle_times: tuple[time, ...] = (time(9, 30), time(13, 0))
    cycle_start_tolerance_minutes: float = Field(10, ge=0, le=120)
    # A cycle that starts at the open waits this long, so that the opening range (and a first
    # volume reading) exists before anything is scanned.
    opening_range_minutes: float = Field(15, ge=0, le=120)


class ScanSettings(Strict):
    default_index: str = "ALL"
    volume_lookback_sessions: int = Field(20, ge=1, le=60)
    indices: dict[str, tuple[str, ...]] = {}


class Ticks(Strict):
    hk_phase2_date: date | None = None


NewsProviderName = Literal["alpaca", "rss", "newsapi"]


class NewsSettings(Strict):
    """Where ``get_news`` gets its headlines, and what counts as a catalyst.

    Each listed provider is used only where it can work: ``alpaca`` with the Alpaca keys (US
    symbols), ``rss`` with at least one feed, ``newsapi`` with NEWSAPI_KEY. A replay uses none of
    them: its news comes from the ``news.csv`` beside its bars.
    """

    providers: tuple[NewsProviderName, ...] = ("alpaca", "rss", "newsapi")
    rss_feeds: tuple[str, ...] = ()
    # Other names a company is written under in headlines, by symbol, e.g. {"9988": ["Alibaba"]};
    # the broker's name for it is always tried too.
    aliases: dict[str, tuple[str, ...]] = {}
    # A symbol's news has a catalyst when its overall score reaches this and one of its headlines
    # carries a positive catalyst tag (config/news_context.yaml).
    catalyst_threshold: float = Field(0.3, ge=-1, le=1)
    max_headlines: int = Field(8, ge=1, le=8)
    # A provider is asked again for the same symbol only after this long.
    refresh_minutes: float = Field(5, ge=0, le=1440)
    # One provider's request; past it that provider counts as failed for this call.
    timeout_seconds: float = Field(5, gt=0, le=60)
    context_file: Path = CONFIG_DIR / "news_context.yaml"

    @field_validator("aliases")
    @classmethod
    def _aliases_by_canonical_symbol(cls, aliases: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        from core.instruments import parse_symbol

        return {str(parse_symbol(code)): names for code, names in aliases.items()}

    @field_validator("context_file")
    @classmethod
    def _relative_to_config(cls, path: Path) -> Path:
        return path if path.is_absolute() else CONFIG_DIR / path


class Profile(Strict):
    market: Market
    agent_id: str = Field(min_length=1, max_length=50)
    live: bool = False
    risk: RiskLimits = RiskLimits()
    entry: EntryPolicy = EntryPolicy()
    signals: SignalThresholds = SignalThresholds()
    monitor: MonitorSettings = MonitorSettings()
    models: Models = Models()
    budget: Budget = Budget()
    backstop: Backstop = Backstop()
    fees_hk: HKFees = HKFees()
    fees_us: USFees = USFees()
    paper: PaperExchange = PaperExchange()
    schedule: Schedule = Schedule()
    scan: ScanSettings = ScanSettings()
    ticks: Ticks = Ticks()
    news: NewsSettings = NewsSettings()
    # Who may halt, resume or close_all this agent through its inbox (exact ids): Big Bro, and the
    # ids the human operators write as. A control from anyone else is answered "not allowed".
    controllers: tuple[str, ...] = Field(("big_bro",), min_length=1)
    # How many of the pending inbox messages one cycle's prompt shows (most urgent, then oldest,
    # first); the others stay unread for the next cycles, and the prompt says how many wait.
    max_messages_in_prompt: int = Field(20, ge=1, le=200)

    @field_validator("controllers")
    @classmethod
    def _controller_ids(cls, ids: tuple[str, ...]) -> tuple[str, ...]:
        for agent_id in ids:
            if not AGENT_ID.match(agent_id):
                raise ValueError(f"'{agent_id}' is not an id: use 2-50 lower-case letters, digits, '_', '-' or '.'")
        return ids

    @field_validator("market", mode="before")
    @classmethod
    def _market_upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @property
    def currency(self) -> str:
        return self.market.currency

    def tier(self, n: int) -> EntryTier:
        for t in self.entry.tiers:
            if t.tier == n:
                return t
        raise KeyError(f"no entry tier {n} in the profile (tiers: {[t.tier for t in self.entry.tiers]})")


# --- Secrets and URLs -------------------------------------------------------------------------
class Secrets(Strict):
    """What comes from the environment / .env. ``SecretStr`` keeps values out of reprs."""

    database_url: SecretStr | None = None
    research_database_url: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    moomoo_host: str | None = None
    moomoo_port: int | None = None
    moomoo_trade_pwd: SecretStr | None = None
    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    alpaca_base_url: str | None = None
    alpaca_data_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    alert_email_to: str | None = None
    alert_email_from: str | None = None
    alert_webhook_url: SecretStr | None = None
    newsapi_key: SecretStr | None = None
    newsapi_url: str | None = None
    var_dir: Path = PROJECT_DIR / "var"

    @field_validator("var_dir", mode="before")
    @classmethod
    def _home(cls, v: Any) -> Any:
        return Path(v).expanduser() if isinstance(v, (str, Path)) else v  # CATALYST_VAR_DIR=~/catalyst-var

    def database_urls(self) -> tuple[str | None, str | None]:
        """(trading, research) database URLs for ``store.open_databases``; None: the embedded server."""
        return tuple(url.get_secret_value() if url else None  # type: ignore[return-value]
                     for url in (self.database_url, self.research_database_url))

    def broker_for(self, market: Market) -> str:
        """The broker these settings reach for ``market``: moomoo, alpaca, or paper (none configured).
        A half-configured one is a ConfigError, not "no broker": a cron run would skip for ever."""
        missing = self._half_configured_broker(market)
        if missing:
            raise ConfigError(missing)
        if market is Market.HK and self.moomoo_host:
            return "moomoo"
        if market is Market.US and self.alpaca_api_key and self.alpaca_secret_key:
            return "alpaca"
        return "paper"

    def _half_configured_broker(self, market: Market) -> str | None:
        """What is missing of ``market``'s broker when some of its variables are set (names, never values)."""
        if market is Market.US:
            given = [var for var, value in (("ALPACA_API_KEY", self.alpaca_api_key),
                                            ("ALPACA_SECRET_KEY", self.alpaca_secret_key)) if value]
            needed, broker = ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"), "the Alpaca broker needs both"
        else:
            given = [var for var, value in (("MOOMOO_PORT", self.moomoo_port),
                                            ("MOOMOO_TRADE_PWD", self.moomoo_trade_pwd)) if value]
            if self.moomoo_host:
                return None
            needed, broker = ("MOOMOO_HOST",), "the Moomoo broker needs the host of its OpenD gateway"
        absent = [var for var in needed if var not in given]
        if not given or not absent:
            return None
        return (f"environment variable {' and '.join(absent)} is not set but {' and '.join(given)} is: {broker} "
                "(see .env.example); leave them all empty for the built-in paper exchange")

    def secret_values(self) -> list[str]:
        """Every secret value, for the log redactor."""
        values = []
        for name in type(self).model_fields:
            v = getattr(self, name)
            if isinstance(v, SecretStr) and v.get_secret_value():
                values.append(v.get_secret_value())
        return values


ENV_VARS = {
    "DATABASE_URL": "database_url",
    "RESEARCH_DATABASE_URL": "research_database_url",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "ANTHROPIC_BASE_URL": "anthropic_base_url",
    "MOOMOO_HOST": "moomoo_host",
    "MOOMOO_PORT": "moomoo_port",
    "MOOMOO_TRADE_PWD": "moomoo_trade_pwd",
    "ALPACA_API_KEY": "alpaca_api_key",
    "ALPACA_SECRET_KEY": "alpaca_secret_key",
    "ALPACA_BASE_URL": "alpaca_base_url",
    "ALPACA_DATA_URL": "alpaca_data_url",
    "SMTP_HOST": "smtp_host",
    "SMTP_PORT": "smtp_port",
    "SMTP_USER": "smtp_user",
    "SMTP_PASSWORD": "smtp_password",
    "ALERT_EMAIL_TO": "alert_email_to",
    "ALERT_EMAIL_FROM": "alert_email_from",
    "ALERT_WEBHOOK_URL": "alert_webhook_url",
    "NEWSAPI_KEY": "newsapi_key",
    "NEWSAPI_URL": "newsapi_url",
    "CATALYST_VAR_DIR": "var_dir",
}


POSTGRES_SCHEMES = ("postgresql", "postgres")


def load_secrets(env: Mapping[str, str]) -> Secrets:
    values = {field: env[var] for var, field in ENV_VARS.items() if env.get(var, "").strip()}
    for var in ("DATABASE_URL", "RESEARCH_DATABASE_URL"):
        url = env.get(var, "").strip()
        scheme = url.split("://", 1)[0].lower() if "://" in url else None
        if url and scheme not in POSTGRES_SCHEMES:  # name the scheme, never the URL (it holds a password)
            got = f"a '{scheme}' URL" if scheme else "no URL scheme"
            raise ConfigError(f"environment variable {var}: must be a PostgreSQL URL like "
                              f"postgresql://user:password@host:5432/database; got {got}")
    try:
        return Secrets(**values)
    except ValidationError as exc:
        # Name the variable, never its value.
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        var = next((k for k, v in ENV_VARS.items() if v == field), field)
        raise ConfigError(f"environment variable {var}: {err['msg']}") from None


# --- Loading ----------------------------------------------------------------------------------
def profile_path(market: str) -> Path:
    return CONFIG_DIR / f"{market.lower()}.yaml"


def load_profile(path: Path, env: Mapping[str, str] | None = None) -> Profile:
    """Read a profile file (and the one it ``extends``), apply ``CATALYST__...`` overrides from ``env``, validate."""
    env = os.environ if env is None else env
    data = _read_profile_file(path)
    overridden: dict[tuple[str, ...], str] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        keys = tuple(part.lower() for part in var[len(ENV_PREFIX):].split("__"))
        if keys == LIVE_KEY:
            continue  # real money needs the profile file and --live, never the environment (see live_env_note)
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"environment variable {var}: not a YAML value ({problem}); "
                              "write e.g. 3, true, 0.5 or '[\"09:30\", \"13:00\"]'") from None
        _set_nested(data, keys, value)
        overridden[keys] = var
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, overridden)) from None


LIVE_KEY = ("live",)
LIVE_ENV = ENV_PREFIX + "LIVE"


def live_env_note(env: Mapping[str, str], path: Path) -> str | None:
    """What to tell a user who set ``CATALYST__LIVE``: it is ignored, and what counts instead."""
    if LIVE_ENV not in env:
        return None
    return (f"note: {LIVE_ENV} is ignored: real money needs `live: true` in the profile file ({path}) "
            "and --live on the command line")


EXTENDS_KEY = "extends"


def _read_profile_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's keys over those of the profile it ``extends`` (a path relative to the file), key by
    key in nested sections. ``live`` is never taken from the base: real money is said in the file itself."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"profile file {path} does not exist (profiles: config/hk.yaml, config/us.yaml)") from None
    except IsADirectoryError:
        raise ConfigError(f"profile file {path} is a folder; name a YAML file (e.g. config/hk.yaml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile file {path} cannot be read: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    base_name = data.pop(EXTENDS_KEY, None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: `{EXTENDS_KEY}` names one profile file, e.g. ../hk.yaml")
    base_path = (path.parent / base_name).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: `{EXTENDS_KEY}: {base_name}` goes round in a circle")
    base = _read_profile_file(base_path, (*seen, path.resolve()))
    base.pop(LIVE_KEY[0], None)
    return _merged(base, data)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) and value else value
    return out


def _set_nested(data: dict, keys: tuple[str, ...], value: Any) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _explain(exc: ValidationError, path: Path, overridden: dict[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "(profile)"
        source = overridden.get(loc)
        where = f"environment variable {source} (over {path})" if source else str(path)
        if err["type"] == "missing":  # the input is the whole section: never echo it
            lines.append(f"{where}: required key '{key}' is missing")
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            lines.append(f"{where}: unknown key '{key}'; allowed here: {', '.join(allowed)}")
        else:
            value = err.get("input")
            lines.append(f"{where}: {key} = {value!r} is not allowed: {err['msg']}")
    return "configuration error: " + "; ".join(lines)


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: Any = Profile
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = field.annotation
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def read_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over ``.env`` (the environment wins)."""
    env = {k: v for k, v in dotenv_values(PROJECT_DIR / ".env").items() if v is not None}
    env.update(base if base is not None else os.environ)
    return env
