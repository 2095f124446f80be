"""What the consciousness MCP tools answer: agents, positions, messages, Big Bro's notes, the day.

Every answer is a compact dict of plain JSON values. Nothing here places or cancels an order: the
only writes are rows in Big Bro's tables (messages, observations, learnings, questions), each with
who wrote it (``from_agent`` / ``agent_id``) and where it came from (``source_db`` or
``data.sent_via`` = ``consciousness_mcp``). Trading changes go to an agent as a task that the agent
obeys and answers.
"""
from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Callable

from core.clock import Clock
from consciousness_notify import BIG_BRO
from data.calendar import CalendarRangeError, MarketCalendar
from core.instruments import Market
from oversight.agents import SENDER_ID, AgentInfo, AgentKind, AgentRegistry, CONTROLLABLE_KINDS
from oversight.store import SOURCE, OversightStore
from runner.status import build_status
from store.trading import TradingStore

log = logging.getLogger("catalyst.mcp")

# Events that say something went wrong (the daily review lists them).
ERROR_EVENTS = ("MONITOR_ERROR", "RUN_FAILED", "DATA_UNAVAILABLE", "RISK_HALT", "RISK_WARNING", "BUDGET",
                "RUN_STOPPED", "NO_BACKSTOP")
BODY_CHARS = 600  # a message body is cut here in lists (get_messages include_data shows data, not more body)


class Refused(Exception):
    """A request the server will not carry out; the message says why and what is allowed."""


def plain(value: Any, redact: Callable[[str], str]) -> Any:
    """JSON-ready: Decimal and times as strings, enums as values, every string through ``redact``."""
    if isinstance(value, dict):
        return {str(k): plain(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v, redact) for v in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # 33.150000 (a column's scale) as 33.15, 100.00 as 100
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return plain(value.value, redact)
    return redact(str(value))


@dataclass
class Oversight:
    store: OversightStore
    registry: AgentRegistry
    clock: Clock
    transport: str

    def __post_init__(self) -> None:
        self._calendars: dict[Market, MarketCalendar] = {}
        for profile in self.registry.profiles.values():
            self.calendar(profile.market)

    def calendar(self, market: Market) -> MarketCalendar:
        if market not in self._calendars:
            self._calendars[market] = MarketCalendar(market)
        return self._calendars[market]

    # --- agents ----------------------------------------------------------------------------------
    async def agents(self, include_records: bool = False) -> list[AgentInfo]:
        """Trading agents, Big Bro and demos (and with ``include_records`` replays, archives, others)."""
        every = self.registry.known(await self.store.agent_ids())
        if include_records:
            return every
        return [a for a in every if a.kind in (AgentKind.TRADING, AgentKind.OVERSIGHT, AgentKind.DEMO)]

    async def resolve(self, agent_id: str) -> AgentInfo:
        known = self.registry.known(await self.store.agent_ids())
        for info in known:
            if info.agent_id == agent_id:
                return info
        like = self.registry.look_alike(agent_id)
        hint = f" (it looks like '{like}', but only the exact id is that agent)" if like else ""
        raise Refused(f"unknown agent '{agent_id}'{hint}; known agents: {_listing(known)}")

    def _moment(self, info: AgentInfo, day: date | None) -> tuple[datetime, date, MarketCalendar]:
        """(now, trading day, calendar) for an agent with a market: today, or the end of ``day``."""
        assert info.profile is not None
        calendar = self.calendar(info.profile.market)
        now = self.clock.now()
        if day is None:
            return now, calendar.trading_day(now), calendar
        if day > calendar.trading_day(now):
            raise Refused(f"day {day} is in the future ({info.market} today is {calendar.trading_day(now)})")
        try:
            session = calendar.session(day)
        except CalendarRangeError as exc:
            raise Refused(str(exc)) from None
        end = session.close if session else calendar.at_local(day, time(23, 59, 59))
        at = min(end, now)
        return at, calendar.trading_day(at), calendar

    def _day_bounds(self, calendar: MarketCalendar, day: date) -> tuple[datetime, datetime]:
        return calendar.at_local(day, datetime.min.time()), calendar.at_local(day, datetime.max.time())

    # --- get_agent_status ------------------------------------------------------------------------
    async def agent_status(self, agent_id: str | None, day: date | None, include_records: bool) -> dict[str, Any]:
        infos = [await self.resolve(agent_id)] if agent_id else await self.agents(include_records)
        states = await self.store.states([i.agent_id for i in infos])
        unread = await self.store.pending_counts([i.agent_id for i in infos])
        out = [await self._one_status(i, day, states.get(i.agent_id), unread.get(i.agent_id, 0)) for i in infos]
        answer: dict[str, Any] = {"now": self.clock.now(), "agents": out}
        if agent_id is None and not include_records:
            hidden = len(await self.agents(True)) - len(infos)
            if hidden:
                answer["not_listed"] = (f"{hidden} replay/archived/other agent id(s); include_records=true lists them")
        return answer

    async def _one_status(self, info: AgentInfo, day: date | None, state: dict | None, unread: int) -> dict[str, Any]:
        entry = info.label()
        entry["unread_messages"] = unread
        if state:
            entry.update({k: state[k] for k in ("current_mode", "last_wake_at", "last_action_at", "status_message",
                                                  "error_count_today", "last_error", "last_error_at")})
            entry["mode"] = entry.pop("current_mode")
        if info.profile is None:
            if state:
                entry["llm"] = {"spend_today_usd": state["api_spend_today"], "budget_usd": state["daily_budget"]}
            return entry
        now, trading_day, calendar = self._moment(info, day)
        store = TradingStore(self.store.trading, info.agent_id, info.profile.market)
        status = await build_status(store, calendar, info.profile, now, "")
        live_allowed = info.is_live_agent and info.profile.live
        alive = {p["position_id"]: p["monitor_alive"] for p in
                 await self.store.open_positions([info.agent_id], None, self.clock.now())}
        positions = []
        for p in status["positions"]:
            positions.append({**p, "monitor_alive": bool(alive.get(p["position_id"]))})
        entry.update({
            "live": live_allowed,
            "session": status["session"],
            "positions": positions,
            "today": status["today"],
            "llm": status["llm"],
            "monitors": {"alive": sum(1 for p in positions if p["monitor_alive"]),
                         "dead": [p["symbol"] for p in positions if not p["monitor_alive"]]},
            "cycles": status["cycles"][:3],
        })
        return entry

    # --- positions -------------------------------------------------------------------------------
    async def positions(self, market: str | None, include_non_live: bool) -> dict[str, Any]:
        every = self.registry.known(await self.store.agent_ids())
        chosen = [a for a in every if a.profile is not None and (a.is_live_agent or include_non_live)]
        kinds = {a.agent_id: a for a in chosen}
        rows = await self.store.open_positions(list(kinds), market, self.clock.now())
        out, totals = [], {}
        for r in rows:
            info = kinds[r["agent_id"]]
            entry = {
                "agent_id": r["agent_id"], "agent_kind": info.kind.value, "market": r["market"],
                "symbol": r["symbol"], "side": r["side"], "quantity": r["quantity"],
                "entry_price": r["entry_price"], "entry_time": r["entry_time"], "stop_price": r["stop_price"],
                "target_price": r["target_price"], "backstop_status": r["backstop_status"],
                "position_id": r["position_id"], "last_price": r["last_price"], "pnl_pct": r["pnl_pct"],
                "monitor": r["monitor_status"], "monitor_alive": bool(r["monitor_alive"]),
                "last_check_at": r["last_check_at"],
            }
            if r["last_price"] is not None:
                sign = 1 if r["side"] == "long" else -1
                entry["unrealized_pnl"] = ((r["last_price"] - r["entry_price"]) * r["quantity"] * sign).quantize(Decimal("0.01"))
            if not info.is_live_agent:
                entry["note"] = "not the live agent: " + info.kind.value
            out.append(entry)
            if info.is_live_agent:
                t = totals.setdefault(r["market"], {"open_positions": 0, "unwatched": 0})
                t["open_positions"] += 1
                t["unwatched"] += 0 if r["monitor_alive"] else 1
        answer: dict[str, Any] = {"now": self.clock.now(), "positions": out, "live_totals": totals}
        if not include_non_live:
            answer["scope"] = "the live trading agents only (include_non_live=true adds demo/replay/archived ids)"
        return answer

    # --- messages --------------------------------------------------------------------------------
    async def messages(self, agent: str | None, unread: bool, msg_type: str | None, limit: int,
                       include_data: bool, mark_read: bool) -> dict[str, Any]:
        rows = await self.store.messages(agent=agent, unread=unread, msg_type=msg_type, limit=limit)
        out = []
        for r in rows:
            body = r["body"] or ""
            entry = {"id": r["id"], "created_at": r["created_at"], "from": r["from_agent"], "to": r["to_agent"],
                     "type": r["msg_type"], "priority": r["priority"], "status": r["status"], "subject": r["subject"],
                     "body": body if len(body) <= BODY_CHARS else body[:BODY_CHARS] + "…"}
            data = r["data"] or {}
            if data.get("event"):
                entry["event"] = data["event"]
            if r["reply_to_id"] is not None:
                entry["reply_to_id"] = r["reply_to_id"]
            if data.get("command"):
                entry["command"] = data["command"]
            if include_data:
                entry["data"] = data
            out.append(entry)
        answer: dict[str, Any] = {"count": len(out), "messages": out}
        if agent is not None and not rows:
            known = self.registry.known(await self.store.agent_ids())
            if agent not in {a.agent_id for a in known}:
                answer["note"] = f"no agent '{agent}' is known; known agents: {_listing(known)}"
        if mark_read:
            # Only messages addressed to Big Bro or a person: an agent's inbox is the agent's to read.
            readers = {r["to_agent"] for r in rows
                       if self.registry.classify(r["to_agent"]).kind in (AgentKind.OVERSIGHT, AgentKind.OTHER)}
            ids = [r["id"] for r in rows if r["status"] == "pending" and r["to_agent"] in readers]
            answer["marked_read"] = await self.store.mark_read(ids, readers, self.clock.now()) if ids else 0
        return answer

    async def send_message(self, *, to_agent: str, subject: str, body: str, msg_type: str, command: str | None,
                           priority: str | None, from_agent: str) -> dict[str, Any]:
        sender = self._check_sender(from_agent)
        target = await self.resolve(to_agent)
        if target.agent_id == sender:
            raise Refused("a message to oneself: from_agent and to_agent are the same")
        if not target.receives_messages:
            receivers = [a for a in await self.agents() if a.receives_messages]
            raise Refused(f"'{to_agent}' is a {target.kind.value} agent id: nothing reads its inbox; "
                          f"agents that read messages: {_listing(receivers)}")
        if command is not None:
            msg_type = "task"
            if target.kind not in CONTROLLABLE_KINDS:
                raise Refused(f"'{to_agent}' does not trade: halt/resume/close_all go to a trading or demo agent")
            self._check_controller(sender, target)
        priority = priority or ("urgent" if command else "normal")
        data: dict[str, Any] = {"sent_via": SOURCE, "transport": self.transport}
        if command:
            data["command"] = command
        message_id = await self.store.insert_message(
            from_agent=sender, to_agent=target.agent_id, msg_type=msg_type, priority=priority, subject=subject,
            body=body, data=data, at=self.clock.now(), requires_response=command is not None)
        log.info("message %s (%s%s) from %s to %s over %s", message_id, msg_type, f" {command}" if command else "",
                 sender, target.agent_id, self.transport)
        answer: dict[str, Any] = {"id": message_id, "from": sender, "to": target.agent_id, "type": msg_type,
                                  "priority": priority, "status": "pending", **target.label()}
        answer.pop("agent_id")
        if command:
            interval = target.profile.monitor.check_interval_seconds if target.profile else None
            answer["command"] = command
            answer["what_happens"] = (
                f"{target.agent_id} obeys '{command}' when it next reads its inbox: at the start of its next run or "
                f"heartbeat, or within {interval:.0f} s while a run is watching positions; it answers with a "
                f"'response' message with reply_to_id={message_id} (get_messages agent={target.agent_id} type=response)")
        elif target.kind is AgentKind.OVERSIGHT:
            answer["what_happens"] = "waits in Big Bro's inbox (get_messages agent=big_bro unread=true)"
        else:
            answer["what_happens"] = f"{target.agent_id} reads it at its next run or heartbeat and puts it in its context"
        return answer

    def _check_sender(self, from_agent: str) -> str:
        sender = from_agent.strip()
        if not SENDER_ID.match(sender):
            raise Refused(f"from_agent '{from_agent}': use a lower-case id of 2-50 letters, digits, '_', '-' or '.'")
        kind = self.registry.classify(sender).kind
        if kind not in (AgentKind.OVERSIGHT, AgentKind.OTHER):
            raise Refused(f"from_agent '{sender}' is a {kind.value} agent id: this server never writes as an agent; "
                          f"write as {BIG_BRO} or as yourself (e.g. 'trader')")
        like = self.registry.look_alike(sender)
        if like:
            raise Refused(f"from_agent '{sender}' looks like the agent id '{like}' but is not it: write as {BIG_BRO} "
                          "exactly, or as yourself with an id that looks like no agent's (e.g. 'trader')")
        return sender

    @staticmethod
    def _check_controller(sender: str, target: AgentInfo) -> None:
        """A control from someone the agent would answer "not allowed" is refused here already."""
        controllers = target.profile.controllers  # a trading or demo agent: it has a profile
        if sender not in controllers:
            market = target.market.lower()
            raise Refused(f"'{sender}' is not a controller of {target.agent_id} (controllers: {', '.join(controllers)}): "
                          f"the agent would answer 'not allowed' and do nothing; to let '{sender}' command it, add the "
                          f"id to `controllers:` in config/{market}.yaml")

    # --- observations, learnings, questions ------------------------------------------------------
    async def observations(self, **filters: Any) -> dict[str, Any]:
        rows = await self.store.observations(**filters)
        return {"count": len(rows), "observations": rows}

    async def add_observation(self, *, agent_id: str, **fields: Any) -> dict[str, Any]:
        author = self._check_sender(agent_id)
        tags = {"sent_via": SOURCE, "transport": self.transport}
        oid = await self.store.insert_observation(agent_id=author, at=self.clock.now(), tags=tags, **fields)
        log.info("observation %s recorded by %s over %s", oid, author, self.transport)
        return {"id": oid, "agent_id": author, "recorded": "claude_observations"}

    async def learnings(self, **filters: Any) -> dict[str, Any]:
        rows = await self.store.learnings(**filters)
        return {"count": len(rows), "learnings": rows}

    async def add_learning(self, *, agent_id: str, **fields: Any) -> dict[str, Any]:
        author = self._check_sender(agent_id)
        lid = await self.store.insert_learning(agent_id=author, at=self.clock.now(), **fields)
        log.info("learning %s recorded by %s over %s", lid, author, self.transport)
        return {"id": lid, "agent_id": author, "recorded": "claude_learnings"}

    async def questions(self, **filters: Any) -> dict[str, Any]:
        rows = await self.store.questions(**filters)
        return {"count": len(rows), "questions": rows}

    async def add_question(self, *, agent_id: str, **fields: Any) -> dict[str, Any]:
        author = self._check_sender(agent_id)
        qid = await self.store.insert_question(agent_id=author, at=self.clock.now(), **fields)
        log.info("question %s recorded by %s over %s", qid, author, self.transport)
        return {"id": qid, "agent_id": author, "recorded": "claude_questions"}

    # --- summaries -------------------------------------------------------------------------------
    async def day_of(self, info: AgentInfo, day: date | None) -> dict[str, Any]:
        """One trading agent's day in figures (aggregates only: fast with thousands of rows)."""
        assert info.profile is not None
        now, trading_day, calendar = self._moment(info, day)
        start, end = self._day_bounds(calendar, trading_day)
        figures = await self.store.day_figures(info.agent_id, trading_day, start, end, self.clock.now())
        cycle = await self.store.last_cycle(info.agent_id)
        entry = info.label()
        entry.update({
            "trading_day": trading_day, "currency": info.profile.currency,
            "open_positions": figures["open_positions"], "unwatched_positions": figures["unwatched_positions"],
            "realized_pnl": figures["realized_pnl"], "closed_trades": figures["closed_trades"],
            "entries": figures["entries"], "max_entries": info.profile.risk.max_entries_per_day,
            "halted": bool(figures["halted"]), "halt_reason": figures["halt_reason"],
            "llm_spend_usd": figures["spend_usd"], "llm_budget_usd": info.profile.budget.daily_usd,
        })
        if cycle:
            entry["last_cycle"] = {k: cycle[k] for k in ("cycle_id", "status", "brain", "started_at", "trades_executed")}
        return entry

    async def trading_overview(self, day: date | None, include_non_live: bool) -> dict[str, Any]:
        every = self.registry.known(await self.store.agent_ids())
        traders = [a for a in every if a.profile is not None and
                   (a.kind in (AgentKind.TRADING, AgentKind.DEMO) or include_non_live)]
        states = await self.store.states([a.agent_id for a in traders])
        agents = []
        totals: dict[str, dict[str, Any]] = {}
        for info in traders:
            entry = await self.day_of(info, day)
            state = states.get(info.agent_id)
            if state:
                entry["mode"] = state["current_mode"]
                entry["errors_today"] = state["error_count_today"]
            agents.append(entry)
            if info.is_live_agent:
                t = totals.setdefault(entry["market"], {"currency": entry["currency"], "open_positions": 0,
                                                        "realized_pnl": Decimal(0), "closed_trades": 0})
                t["open_positions"] += entry["open_positions"]
                t["realized_pnl"] += entry["realized_pnl"]
                t["closed_trades"] += entry["closed_trades"]
        attention = await self.store.messages(agent=None, unread=True, msg_type=None, limit=5,
                                              priorities=["urgent", "high"], to_agent=BIG_BRO)
        unread = await self.store.pending_counts([BIG_BRO])
        return {
            "now": self.clock.now(),
            "live_totals": totals,
            "agents": agents,
            "big_bro": {
                "unread_messages": unread.get(BIG_BRO, 0),
                "latest_urgent_or_high_unread": [
                    {"id": m["id"], "from": m["from_agent"], "event": (m["data"] or {}).get("event"),
                     "priority": m["priority"], "subject": m["subject"], "created_at": m["created_at"]}
                    for m in attention],
            },
            "research": await self.store.research_counts(),
        }

    async def consciousness_summary(self, day: date | None) -> dict[str, Any]:
        now = self.clock.now()
        if day is None:
            since, until, window = now - timedelta(hours=24), now, "the last 24 hours"
        else:
            since = datetime.combine(day, time(0), tzinfo=now.tzinfo)
            until, window = since + timedelta(days=1), f"{day} (UTC)"
        infos = await self.agents()
        states = await self.store.states([a.agent_id for a in infos])
        unread = await self.store.pending_counts([a.agent_id for a in infos])
        agents = []
        for info in infos:
            entry = info.label()
            state = states.get(info.agent_id) or {}
            entry.update({"mode": state.get("current_mode"), "last_wake_at": state.get("last_wake_at"),
                          "spend_today_usd": state.get("api_spend_today"), "budget_usd": state.get("daily_budget"),
                          "errors_today": state.get("error_count_today"), "unread_messages": unread.get(info.agent_id, 0)})
            agents.append(entry)
        traffic: Counter[tuple[str, str]] = Counter()
        for r in await self.store.message_counts(since, until):
            traffic[(r["from_agent"], r["event"] or r["msg_type"])] += r["n"]
        by_sender: dict[str, dict[str, int]] = {}
        for (sender, kind), n in sorted(traffic.items()):
            by_sender.setdefault(sender, {})[kind] = n
        questions = await self.store.questions(agent=None, status="open", limit=5)
        return {
            "now": now, "window": window, "agents": agents, "messages_by_sender": by_sender,
            "research": await self.store.research_counts(),
            "top_open_questions": [{"id": q["id"], "priority": q["priority"], "question": q["question"]} for q in questions],
        }

    # --- the day of one agent (resource) and the daily review (prompt) ---------------------------
    async def agent_today(self, agent_id: str, day: date | None = None) -> dict[str, Any]:
        info = await self.resolve(agent_id)
        status = (await self.agent_status(agent_id, day, True))["agents"][0]
        if info.profile is None:
            return status
        now, trading_day, calendar = self._moment(info, day)
        start, end = self._day_bounds(calendar, trading_day)
        exits = await self.store.exits_between(info.agent_id, start, end, 100)
        problems = [m for m in await self.store.messages(agent=info.agent_id, unread=False, msg_type=None, limit=200,
                                                         since=start, until=end)
                    if (m["data"] or {}).get("event") in ERROR_EVENTS]
        status["exits"] = [{k: e[k] for k in ("symbol", "quantity", "entry_price", "exit_price", "exit_time",
                                              "exit_reason", "realized_pnl", "realized_pnl_pct", "status")} for e in exits]
        status["exit_reasons"] = dict(Counter(e["exit_reason"] or "unknown" for e in exits))
        status["problems"] = [{"id": m["id"], "event": m["data"].get("event"), "priority": m["priority"],
                               "subject": m["subject"], "created_at": m["created_at"]} for m in problems[:30]]
        return status

    async def daily_review_data(self, day: date | None, market: str | None) -> list[dict[str, Any]]:
        infos = [a for a in await self.agents() if a.is_live_agent and (market is None or a.market == market)]
        return [await self.agent_today(a.agent_id, day) for a in infos]


def _listing(infos: list[AgentInfo]) -> str:
    parts = []
    for a in infos:
        extra = ", ".join(x for x in (a.kind.value, a.market) if x)
        parts.append(f"{a.agent_id} ({extra})")
    return "; ".join(parts) or "none"
