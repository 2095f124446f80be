"""Big Bro's side of a run: the run's mode in claude_state, the inbox and the control commands it
obeys (halt, resume, close all), adoption of positions left open, the close and heartbeat modes, and
the daily-loss supervisor."""
from __future__ import annotations

import asyncio
import logging
import sys

from consciousness_notify import BIG_BRO, Event, EventType, Priority
from store.bigbro import CONTROLS, InboxMessage
from data.calendar import SessionState
from signals import ExitReason
from engine.day_risk import risk_state
from runner.exit_codes import EXIT_FAILED, EXIT_OK
from runner.runtime import CONTROL_HALT, Runtime

log = logging.getLogger("catalyst.run")



async def run_failed(rt: Runtime, subject: str, error: str) -> None:
    """A run failure: printed (redacted), counted in claude_state, and an urgent event (alerted)."""
    error = rt.notifier.redact(error)
    print(f"run failed: {error}", file=sys.stderr)
    await rt.notifier.send(Event(EventType.RUN_FAILED, subject, error, {"error": error}))
    await record_error(rt, f"{subject}: {error}")


async def stopped_by_signal(rt: Runtime, name: str) -> None:
    """After SIGTERM or SIGINT: say what is left open at the broker and who picks it up. Urgent (and alerted)
    when a position is left without a broker-side backstop: nothing protects it until a heartbeat
    or a run adopts it."""
    try:
        still_open = await rt.store.open_positions()
    except Exception as exc:  # noqa: BLE001 - the message goes out even when the database does not answer
        log.warning("could not list the open positions after %s: %s", name, type(exc).__name__)
        still_open = []
    unprotected = [p for p in still_open if p.backstop_status not in ("placed", "bracket")]
    listed = "; ".join(f"{p.symbol} {p.quantity} (backstop: {p.backstop_status})" for p in still_open) or "none"
    body = (f"Stopped by {name}. Open positions left at the broker: {listed}. Their monitor leases are released: "
            "the next heartbeat or trade run adopts them; `agent.py --mode close` flattens them.")
    print(f"stopped by {name}: {len(still_open)} open position(s) left at the broker ({listed}); "
          "the next heartbeat or run adopts them", file=sys.stderr)
    await rt.notifier.send(Event(
        EventType.RUN_STOPPED, f"Run stopped by {name}: {len(still_open)} position(s) left open", body,
        {"signal": name, "open_positions": [p.position_id for p in still_open],
         "without_backstop": [p.position_id for p in unprotected]},
        Priority.URGENT if unprotected else Priority.HIGH))
    await record_error(rt, f"stopped by {name}")
    await sleep_state(rt, f"stopped by {name}; {len(still_open)} position(s) left open")


async def record_error(rt: Runtime, error: str) -> None:
    if rt.consciousness is not None:
        await rt.side_calls("recording the error in claude_state",
                            lambda: rt.consciousness.record_error(rt.notifier.redact(error), rt.clock.now()))


async def set_mode(rt: Runtime, mode: str, status: str | None = None) -> None:
    """claude_state: mode (awake, trading, monitoring, sleeping), last action, status message."""
    if rt.consciousness is not None:
        await rt.side_calls("updating claude_state", lambda: rt.consciousness.set_mode(
            mode, rt.clock.now(), rt.notifier.redact(status) if status else None))


async def wake(rt: Runtime) -> None:
    if rt.consciousness is not None:
        now = rt.clock.now()
        await rt.side_calls("marking the agent awake in claude_state", lambda: rt.consciousness.wake(
            now, rt.calendar.trading_day(now), rt.profile.budget.daily_usd))


async def sleep_state(rt: Runtime, status: str | None = None) -> None:
    outcomes = rt.monitors.outcomes
    closed = [o for o in outcomes if o.closed]
    entries = sum(c["entries"] for c in rt.cycle_results)
    await set_mode(rt, "sleeping", status or (
        f"run finished: {len(rt.cycle_results)} cycle(s), {entries} entr{'y' if entries == 1 else 'ies'}, "
        f"{len(closed)} exit(s), {len(outcomes) - len(closed)} position(s) left open"))


async def obey_controls(rt: Runtime) -> None:
    """Big Bro's pending commands, most urgent first: each on its own obeyed (from a controller) or
    refused, answered with a ``response`` message and marked processed or failed. A malformed message
    is answered with what is wrong; the others are obeyed all the same. Messages for the brain stay
    pending until a cycle shows them (``inbox_for_the_brain``)."""
    if rt.consciousness is None:
        return
    messages = await rt.side_calls("reading the inbox",
                                   lambda: rt.consciousness.pending_for_the_runner(rt.clock.now()), default=[])
    for message in messages:
        log.info("message %s from %s (%s, %s): %s", message.id, message.from_agent, message.priority,
                 message.msg_type, message.subject)
        await take(rt, message)


async def inbox_for_the_brain(rt: Runtime) -> tuple[list[InboxMessage], int]:
    """(the pending messages one prompt shows, most urgent then oldest first, marked read; how many
    more wait unread for the next cycles). Commands arrived meanwhile are obeyed first."""
    if rt.consciousness is None:
        return [], 0
    await obey_controls(rt)
    now = rt.clock.now()
    shown = await rt.side_calls("reading the inbox", lambda: rt.consciousness.read_inbox(
        now, rt.profile.max_messages_in_prompt), default=[])
    left = await rt.side_calls("counting the unread messages", lambda: rt.consciousness.unread_count(now), default=0)
    for message in shown:
        log.info("message %s from %s (%s, %s): %s", message.id, message.from_agent, message.priority,
                 message.msg_type, message.subject)
    return shown, left


async def take(rt: Runtime, message: InboxMessage) -> None:
    """One command or malformed message: refused and answered why, or obeyed; never lets the next one down."""
    what = (message.command or "message")[:50]
    if message.problem:
        await answer(rt, message, what, False, message.problem)
    elif message.from_agent not in rt.profile.controllers:
        await answer(rt, message, what, False,
                     f"not allowed: '{message.from_agent[:50]}' is not a controller of {rt.profile.agent_id} "
                     f"(controllers: {', '.join(rt.profile.controllers)}); nothing was done")
    elif message.control is None:
        await answer(rt, message, what, False, f"unknown command '{what}'; the commands are {', '.join(CONTROLS)}")
    else:
        try:
            await obey(rt, message)
        except Exception as exc:  # noqa: BLE001 - the next message is obeyed all the same
            log.exception("control %s (message %s) failed", what, message.id)
            await record_error(rt, f"Big Bro's {what} (message {message.id}) failed: {type(exc).__name__}")


async def obey(rt: Runtime, message: InboxMessage) -> None:
    """Carry out ``halt`` (no new entries today), ``resume`` (lift such a halt; never the daily-loss
    halt) or ``close_all`` (flatten now), and answer with a ``response`` message (reply_to_id set)."""
    now = rt.clock.now()
    day = rt.calendar.trading_day(now)
    command = message.control
    ok = True
    try:
        account = await rt.broker.account()
        risk_day = await rt.store.ensure_risk_day(day, account.equity)
        if command == "halt":
            reason = rt.notifier.redact(f"{CONTROL_HALT}{message.from_agent}: {message.body or message.subject}")[:500]
            await rt.store.set_halt(day, True, reason, now)
            text = "halted: no new entries until resumed or the trading day ends"
        elif command == "resume":
            current = risk_day.get("halt_reason") or ""
            if risk_day.get("halted") and not current.startswith(CONTROL_HALT):
                ok = False
                text = f"not resumed: the halt is not a control halt and stays for the day ({current})"
            else:
                await rt.store.set_halt(day, False, None, now)
                text = "resumed: new entries allowed"
        else:
            results = await rt.monitors.close_all(ExitReason.CLOSE_ALL, f"close_all from {message.from_agent}")
            closed = sum(1 for r in results if r["closed"])
            ok = closed == len(results)
            text = f"close_all: {closed} of {len(results)} position(s) closed"
            text += "" if ok else ": " + "; ".join(  # each error says who (if anyone) tries again
                f"{r['symbol']}: {r.get('error')}" for r in results if not r["closed"])
    except Exception as exc:  # noqa: BLE001 - answer Big Bro either way
        log.exception("control %s failed", command)
        ok = False
        text = f"{command} failed: {type(exc).__name__}: {rt.notifier.redact(str(exc))[:300]}"
    await answer(rt, message, command, ok, text)


async def answer(rt: Runtime, message: InboxMessage, what: str, ok: bool, text: str) -> None:
    """The ``response`` to a message (reply_to_id set), then the message marked processed or failed
    (with the reason), and one printed line."""
    now = rt.clock.now()
    await rt.notifier.send(Event(EventType.CONTROL_RESPONSE, f"{what}: {'done' if ok else 'NOT done'}", text,
                                 {"command": what, "in_reply_to": message.id, "ok": ok}, Priority.HIGH,
                                 msg_type="response", reply_to_id=message.id))
    try:
        if ok:
            await rt.consciousness.mark_processed(message.id, now)  # type: ignore[union-attr]
        else:  # answered "NOT done" above; the row says so too, never 'read' as if handled
            await rt.consciousness.mark_failed(message.id, now, text)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - the answer went out; the row's status is what failed
        log.warning("could not mark Big Bro's message %s %s: %s", message.id, "processed" if ok else "failed",
                    type(exc).__name__)
        await record_error(rt, f"Big Bro's {what} (message {message.id}) answered but not marked: {type(exc).__name__}")
    sender = "Big Bro" if message.from_agent == BIG_BRO else f"message {message.id} from '{message.from_agent[:50]}'"
    print(f"{sender} {what}: {rt.notifier.redact(text)}")


async def adopt(rt: Runtime) -> int:
    """Start a monitor for every open position whose monitor lease is missing or expired."""
    started = 0
    for position in await rt.store.unwatched_open_positions(rt.clock.now()):
        if rt.monitors.start(position):
            started += 1
    return started


async def close_mode(rt: Runtime) -> int:
    rt.monitors.keep_trying = False  # this run ends after the attempt: its answer must not promise a retry
    results = await rt.monitors.close_all(ExitReason.CLOSE_ALL, "--mode close")
    for r in results:
        print(f"  {r['symbol']}: {'closed at ' + str(r['exit_price']) if r['closed'] else 'NOT closed: ' + str(r.get('error'))}")
    print(f"close: {sum(1 for r in results if r['closed'])} of {len(results)} position(s) closed")
    return EXIT_OK if all(r["closed"] for r in results) else EXIT_FAILED


async def heartbeat_mode(rt: Runtime) -> int:
    """No new entries: adopt open positions whose monitor died (lease expired) and watch them until
    they close or the session ends. One line and exit 0 when there is nothing to do. Nothing is
    adopted during the lunch break or after the close (the next trade run or heartbeat in a session
    does it), so a heartbeat never holds the agent lock over the afternoon's trade run."""
    now = rt.clock.now()
    state = rt.calendar.state(now)
    if state is not SessionState.OPEN:
        held = len(await rt.store.open_positions())
        print(f"heartbeat: {rt.profile.market.value} session {state.value} "
              f"({rt.calendar.local(now):%Y-%m-%d %H:%M %Z}); {held} open position(s); nothing to watch now")
        return EXIT_OK
    adopted = await adopt(rt)
    if not adopted and not rt.monitors.active():  # (a close_all that failed at the start is being retried)
        held = len(await rt.store.open_positions())
        print(f"heartbeat: nothing to watch ({held} open position(s), "
              f"{'each watched by a live monitor' if held else 'none open'})")
        return EXIT_OK
    symbols = ", ".join(str(m.position.symbol) for pid, m in rt.monitors.monitors.items() if pid in rt.monitors.active())
    print(f"heartbeat: adopted {adopted} position(s) whose monitor had stopped ({symbols}); "
          "watching until they close or the session ends")
    await supervise(rt)
    for o in rt.monitors.outcomes:
        if o.closed:
            print(f"  EXIT {o.symbol} {o.exit_reason} @ {o.exit_price}: {rt.profile.currency} {o.realized_pnl}")
        else:
            print(f"  OPEN {o.symbol}: {o.note or 'still open'}")
    return EXIT_OK


async def supervise(rt: Runtime) -> None:
    """Keep the process alive while monitors run: daily-loss checks and Big Bro's controls meanwhile."""
    interval = rt.profile.monitor.check_interval_seconds
    if rt.monitors.active():
        await set_mode(rt, "monitoring", f"watching {len(rt.monitors.active())} position(s)")
    while rt.monitors.active():
        done, _ = await asyncio.wait([rt.monitors.tasks[pid] for pid in rt.monitors.active()], timeout=interval)
        if not rt.monitors.active():
            break
        try:
            await rt.monitors.ctx.journal.flush(rt.store)  # exits sold while the database was down, booked now
            await obey_controls(rt)
            if rt.cycles:
                await rt.monitors.check_daily_loss(await risk_state(rt.monitors.ctx, rt.cycles[-1].halted_by_control))
        except Exception as exc:  # noqa: BLE001 - supervision must not end the monitors
            log.warning("supervision check failed: %s", exc)


