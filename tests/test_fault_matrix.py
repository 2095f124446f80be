"""What a trader sees when a run meets a fault, bad input or a signal: `agent.py` as a subprocess,
as cron or a shell starts it. Each case asserts the exit code, the one line printed, and what the
database says afterwards (often through the next run, as the trader would look).

Exit codes: 0 done or skipped; 1 the run failed; 2 bad usage or configuration; 3 refused for safety.
"""
from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_harness import (
    NO_SECRETS, PROJECT, agent_cli, big_bro_sends, holding_the_lock_of, inherited_env, migrated,
)
from tests.helpers import query, wait_until

LIVE_AGENT = "intl_claude"
DEMO_AGENT = "intl_claude-demo"


def profile_file(tmp_path: Path, market: str = "hk", **changes: str) -> Path:
    """A copy of the market's profile with top-level keys changed (e.g. live="true")."""
    text = (PROJECT / "config" / f"{market}.yaml").read_text()
    lines = text.splitlines()
    for key, value in changes.items():
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    path = tmp_path / f"{market}-custom.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. a demo never speaks as the live agent -------------------------------------------------------
def test_a_demo_run_leaves_the_live_agents_inbox_lock_and_records_alone(database_url, tmp_path):
    url = migrated(database_url)
    pending = big_bro_sends(url, LIVE_AGENT, "close_all", "halt")

    # The live agent's run is in progress (it holds its lock): the demo has a lock of its own.
    demo = holding_the_lock_of(url, LIVE_AGENT, lambda: agent_cli(url, tmp_path, "--force"))

    assert demo.code == 0, demo.err
    assert f"agent id {DEMO_AGENT}" in demo.out and "ENTRY" in demo.out
    assert demo.out.rstrip().endswith(f"log: {tmp_path / 'logs' / 'agent.log'}"), "the summary names the real log"
    assert (tmp_path / "logs" / "agent.log").exists()
    assert "Big Bro close_all" not in demo.out and "Big Bro halt" not in demo.out, "the demo obeyed the live agent's controls"
    inbox = query(url, "SELECT id, status, read_at FROM claude_messages WHERE id = ANY($1::int[]) ORDER BY id", pending)
    assert [(m["status"], m["read_at"]) for m in inbox] == [("pending", None), ("pending", None)]
    assert query(url, "SELECT * FROM claude_messages WHERE reply_to_id = ANY($1::int[])", pending) == []
    assert query(url, "SELECT * FROM claude_messages WHERE from_agent=$1", LIVE_AGENT) == []
    posted = query(url, "SELECT subject, data FROM claude_messages WHERE from_agent=$1", DEMO_AGENT)
    assert posted and all(m["subject"].startswith("[demo] ") for m in posted)
    assert all(json.loads(m["data"])["run_kind"] == "demo" for m in posted)
    for table in ("cycles", "positions", "orders", "decisions", "monitor_status", "risk_day"):
        assert query(url, f"SELECT * FROM {table} WHERE agent_id=$1", LIVE_AGENT) == [], table

    live_status = agent_cli(url, tmp_path, "--mode", "status", "--json")
    assert live_status.code == 0, live_status.err
    shown = json.loads(live_status.out)
    assert shown["agent_id"] == LIVE_AGENT and shown["empty"] and shown["cycles"] == [] and shown["positions"] == []
    assert shown["today"]["halted"] is False, "the halt waits, unread, for the live agent"

    demo_status = agent_cli(url, tmp_path, "--mode", "status", "--force", "--json")
    shown = json.loads(demo_status.out)
    assert shown["agent_id"] == DEMO_AGENT and len(shown["cycles"]) == 2


def test_a_halt_from_big_bro_lasts_the_trading_day_across_demo_runs(database_url, tmp_path):
    """The agent's answer promises "no new entries until resumed or the trading day ends": the next
    run setting the earlier runs' records aside must not take the halt with them."""
    url = migrated(database_url)
    [halt] = big_bro_sends(url, DEMO_AGENT, "halt")

    first = agent_cli(url, tmp_path, "--force")
    second = agent_cli(url, tmp_path, "--force")

    assert "Big Bro halt: halted" in first.out
    for run in (first, second):
        assert run.code == 3, run.out + run.err
        assert "ENTRY" not in run.out and "no new entries (halted by big_bro" in run.out
    assert query(url, "SELECT * FROM positions") == []
    [answer] = query(url, "SELECT body FROM claude_messages WHERE reply_to_id=$1", halt)
    assert "until resumed or the trading day ends" in answer["body"]


# --- 4. the live gate --------------------------------------------------------------------------------
def test_catalyst_live_in_the_environment_does_not_count_as_the_profiles_live(tmp_path):
    ran = agent_cli(None, tmp_path, "--live", CATALYST__LIVE="true")

    assert ran.code == 3
    assert any("CATALYST__LIVE is ignored" in line for line in ran.lines)
    assert any(line.startswith("refused: --live needs the profile to say `live: true`") for line in ran.lines)
    assert len(ran.lines) == 2, ran.err


def test_live_with_no_live_broker_is_refused_even_when_the_profile_and_the_flag_agree(tmp_path):
    config = profile_file(tmp_path, live="true")

    ran = agent_cli(None, tmp_path, "--config", str(config), "--live", "--force", CATALYST__LIVE="false")

    assert ran.code == 3, ran.out + ran.err
    assert ran.lines[-1] == ("refused: --live needs a live HK broker, and none is configured (see .env.example); "
                             "nothing was traded")
    assert "ENTRY" not in ran.out and "profile to say" not in ran.err, "not the misleading refusal"
    assert not (tmp_path / "var" / "pg").exists(), "refused before anything started"


def test_status_never_says_live_for_an_agent_without_a_live_broker(database_url, tmp_path):
    config = profile_file(tmp_path, live="true")

    ran = agent_cli(database_url, tmp_path, "--config", str(config), "--mode", "status")

    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[0] == f"Catalyst {LIVE_AGENT} — HK (paper)"


# --- 5. an unreachable Messages API never hangs a run -------------------------------------------------
def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def silent_api():
    """A server that takes the connection and never answers (a black hole behind a proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("api", ["closed port", "never answers"])
def test_an_unreachable_messages_api_ends_a_simulated_clock_run_with_one_line(database_url, tmp_path, api):
    """The SDK's back-off and timeouts ran on the event loop's timers, which never come due under the
    simulated clock while a call is in flight: the demo hung for ever on the first retryable error."""
    with contextlib.ExitStack() as stack:
        url = closed_port_url() if api == "closed port" else stack.enter_context(silent_api())
        ran = agent_cli(database_url, tmp_path, "--force", timeout=60, ANTHROPIC_API_KEY="sk-ant-fault-matrix",
                        ANTHROPIC_BASE_URL=url, CATALYST__MODELS__REQUEST_TIMEOUT_SECONDS="2")

    assert ran.code == 1, ran.out + ran.err
    [line] = ran.lines
    said = "APIConnectionError: Connection error." if api == "closed port" else "did not answer within 2 s (3 attempts)"
    assert re.fullmatch(r"cycle hk_\d{8}_\d{6}_[0-9a-f]{6} failed: .*", line) and said in line, line
    [cycle] = query(database_url, "SELECT status, error FROM cycles")
    assert cycle["status"] == "failed" and said in cycle["error"]
    assert "sk-ant-fault-matrix" not in ran.out + ran.err


def test_an_unreachable_messages_api_ends_a_wall_clock_run_through_a_broker_with_one_line(alpaca_fake, database_url,
                                                                                          tmp_path):
    """The whole agent on the wall clock, trading through a broker (the fake Alpaca): the same three attempts
    on the real clock, then one line and exit 1, well within a minute."""
    ran = agent_cli(database_url, tmp_path, "--force", "--market", "us", timeout=60,
                    ANTHROPIC_API_KEY="sk-ant-fault-matrix", ANTHROPIC_BASE_URL=closed_port_url(),
                    ALPACA_API_KEY=alpaca_fake.api_key, ALPACA_SECRET_KEY=alpaca_fake.secret_key,
                    ALPACA_BASE_URL=alpaca_fake.base_url, ALPACA_DATA_URL=alpaca_fake.base_url)

    assert ran.code == 1, ran.out + ran.err
    [line] = ran.lines
    assert re.fullmatch(r"cycle us_\d{8}_\d{6}_[0-9a-f]{6} failed: .*", line) and "APIConnectionError" in line, line
    [cycle] = query(database_url, "SELECT status, error FROM cycles WHERE agent_id='public_claude'")
    assert cycle["status"] == "failed" and "APIConnectionError" in cycle["error"]
    assert "sk-ant-fault-matrix" not in ran.out + ran.err


def test_an_unreachable_messages_api_ends_a_replay_with_its_report(database_url, tmp_path):
    ran = agent_cli(database_url, tmp_path, "--replay", "data/samples/hk", "--from", "2022-06-15", "--to", "2022-06-15",
                    timeout=60, ANTHROPIC_API_KEY="sk-ant-fault-matrix", ANTHROPIC_BASE_URL=closed_port_url())

    assert ran.code == 1
    assert "APIConnectionError: Connection error." in ran.err and ran.lines[-1].startswith("replay failed: ")
    assert list((tmp_path / "reports").glob("replay-*/report.json")), ran.out + ran.err


# --- 6. a run stopped mid-cycle: Ctrl-C, kill, kill -9 -----------------------------------------------------
def wait_for_row(url: str, sql: str, proc: subprocess.Popen, deadline_s: float = 60) -> dict:
    """Wait until ``sql`` returns a row (the run got that far); fail if the run ended first."""
    def row():
        rows = query(url, sql)
        assert rows or proc.poll() is None, f"the run ended first: {proc.communicate()}"
        return rows[0] if rows else None

    return wait_until(row, deadline_s, f"a row of {sql!r}", interval=0.1)


def start_agent(url: str, tmp_path: Path, *argv: str, **env: str) -> subprocess.Popen:
    base = {**inherited_env(), **NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_LOG_DIR": str(tmp_path / "logs"), "CATALYST_REPORTS_DIR": str(tmp_path / "reports")}
    return subprocess.Popen([sys.executable, str(PROJECT / "agent.py"), *argv], cwd=PROJECT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**base, **env})


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_run_stopped_during_a_cycle_leaves_no_cycle_running(database_url, tmp_path, how):
    """Ctrl-C acts like `kill`: one line, exit 1, the cycle recorded as interrupted, Big Bro told.
    After kill -9 nothing can be said at once: the next run (here `--mode status`) closes the cycle."""
    url = migrated(database_url)
    with silent_api() as api:  # the cycle waits for the model: a moment to stop it in
        proc = start_agent(url, tmp_path, "--force", ANTHROPIC_API_KEY="sk-ant-fault-matrix", ANTHROPIC_BASE_URL=api,
                           CATALYST__MODELS__REQUEST_TIMEOUT_SECONDS="120")
        try:
            cycle = wait_for_row(url, "SELECT cycle_id FROM cycles WHERE status='running'", proc)
            proc.send_signal(how)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    if how is signal.SIGKILL:
        assert query(url, "SELECT status FROM cycles")[0]["status"] == "running", "premise: nothing ran after kill -9"
        after = agent_cli(url, tmp_path, "--mode", "status", "--force", "--json")
        assert after.code == 0 and after.lines == [
            "repaired: 1 cycle(s) left running by a stopped run are marked interrupted"], after.err
        assert [c["status"] for c in json.loads(after.out)["cycles"]] == ["interrupted"]
    else:
        assert proc.returncode == 1, out + err
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err and "Event loop is closed" not in err, err
        assert lines == [f"stopped by {how.name}: 0 open position(s) left at the broker (none); "
                         "the next heartbeat or run adopts them"], err
        [stopped] = query(url, "SELECT priority, subject FROM claude_messages WHERE from_agent=$1 "
                               "AND data->>'event' = 'RUN_STOPPED'", DEMO_AGENT)
        assert stopped["subject"] == f"[demo] Run stopped by {how.name}: 0 position(s) left open"
    [row] = query(url, "SELECT cycle_id, status, error FROM cycles")
    assert row["cycle_id"] == cycle["cycle_id"] and row["status"] == "interrupted" and "stopped" in row["error"]


def test_a_stopped_replay_writes_a_partial_report_that_says_so(database_url, tmp_path):
    url = migrated(database_url)
    with silent_api() as api:
        proc = start_agent(url, tmp_path, "--replay", "data/samples/hk", "--from", "2022-06-14", "--to", "2022-06-15",
                           ANTHROPIC_API_KEY="sk-ant-fault-matrix", ANTHROPIC_BASE_URL=api,
                           CATALYST__MODELS__REQUEST_TIMEOUT_SECONDS="120")
        try:
            wait_for_row(url, "SELECT cycle_id FROM cycles WHERE status='running'", proc)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    said = "stopped by SIGINT during the session of 2022-06-14; the report covers the 0 session(s) replayed before it"
    assert err.strip().splitlines()[-1] == f"replay failed: {said}"
    [folder] = (tmp_path / "reports").glob("replay-*")
    assert json.loads((folder / "report.json").read_text())["run"]["partial"] == said
    assert f"**Partial report**: {said}." in (folder / "report.md").read_text()
    assert "PARTIAL report" in out
    assert not list((tmp_path / "var").glob("outbox-*.jsonl")), "the replay's Big Bro events were delivered"


def test_status_shows_a_monitor_whose_run_was_killed_as_dead(database_url, tmp_path):
    """kill -9 leaves the monitor row 'running'; once its lease has lapsed nobody watches the position."""
    from datetime import datetime, timedelta, timezone

    url = migrated(database_url)
    long_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    [position] = query(url, """INSERT INTO positions (agent_id, market, symbol, side, quantity, entry_price, entry_time,
                                                      trading_day, stop_price, target_price)
                               VALUES ($1, 'HK', 'HK.09988', 'long', 100, 104.5, $2, $3, 101, 110)
                               RETURNING position_id""", LIVE_AGENT, long_ago, long_ago.date())
    query(url, """INSERT INTO monitor_status (position_id, agent_id, symbol, status, owner, lease_expires_at,
                                              started_at, updated_at)
                  VALUES ($1, $2, 'HK.09988', 'running', 'intl_claude@killed-run', $3, $3, $3)""",
          position["position_id"], LIVE_AGENT, long_ago + timedelta(minutes=2))

    ran = agent_cli(url, tmp_path, "--mode", "status")

    assert ran.code == 0, ran.err
    [line] = [line for line in ran.out.splitlines() if "HK.09988" in line]
    assert "monitor dead" in line, ran.out
    assert query(url, "SELECT status FROM monitor_status")[0]["status"] == "dead"


# --- 7. the embedded PostgreSQL of a killed run -------------------------------------------------------
def test_an_embedded_postgresql_left_by_a_killed_run_is_reused_and_stopped_by_the_next_run(tmp_path):
    import psutil

    pg = tmp_path / "var" / "pg"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom store.db import EmbeddedPostgres\n"
         "EmbeddedPostgres(Path(sys.argv[1])).start()\nprint('up', flush=True)\ntime.sleep(600)", str(pg)],
        cwd=PROJECT, text=True, stdout=subprocess.PIPE)
    postmaster = None
    try:
        assert holder.stdout.readline().strip() == "up"
        holder.kill()  # kill -9: pgserver's exit handler never runs
        holder.wait()
        postmaster = psutil.Process(int((pg / "postmaster.pid").read_text().split()[0]))
        assert postmaster.is_running(), "premise: the server outlives the killed run"

        ran = agent_cli(None, tmp_path, "--mode", "status")

        assert ran.code == 0, ran.err
        assert f"embedded PostgreSQL ({pg})" in ran.out
        assert not (pg / "postmaster.pid").exists(), "the last live user stopped the server"
        assert json.loads((pg / ".handle_pids.json").read_text()) == []
        postmaster.wait(timeout=30)
    finally:
        if postmaster is not None and postmaster.is_running():
            postmaster.kill()


def test_a_run_that_reopens_its_embedded_postgresql_keeps_it_when_another_run_sharing_it_ends(tmp_path):
    """--compare closes the databases after the agent's replay and opens them again for the random
    control. Another run on the same var/ (cron's session beside a trader's replay) must not take
    the server away from it when that other run ends first."""
    from store.db import EmbeddedPostgres

    pg = tmp_path / "var" / "pg"
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom store.db import EmbeddedPostgres\n"
         "server = EmbeddedPostgres(Path(sys.argv[1]))\nserver.start()\nprint('up', flush=True)\n"
         "sys.stdin.readline()\nserver.stop()\nprint('stopped', flush=True)", str(pg)],
        cwd=PROJECT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ours = EmbeddedPostgres(pg)
    try:
        assert other.stdout.readline().strip() == "up"
        ours.start()
        ours.stop()  # the agent's replay is over; the other run still uses the server
        url = ours.start()  # the random control
        other.stdin.write("\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "stopped"
        assert other.wait(timeout=30) == 0

        assert query(url, "SELECT 1 AS one") == [{"one": 1}]
    finally:
        if other.poll() is None:
            other.kill()
        ours.stop()
    assert json.loads((pg / ".handle_pids.json").read_text()) == []
    assert not (pg / "postmaster.pid").exists(), "the last run stopped the server"


# --- errors a user makes: one line, exit 2, before anything runs ------------------------------------------
def _file_in_the_way(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    return str(blocker / "reports")


def _profile_without_agent_id(tmp_path: Path) -> str:
    path = tmp_path / "no-agent-id.yaml"
    path.write_text("".join(line + "\n" for line in (PROJECT / "config" / "hk.yaml").read_text().splitlines()
                            if not line.startswith("agent_id:")))
    return str(path)


USAGE_ERRORS = {
    "brain claude without a key": (["--brain", "claude", "--force"], {},
                                   "agent.py: --brain claude needs ANTHROPIC_API_KEY"),
    "DATABASE_URL not a URL": (["--force"], {"DATABASE_URL": "not-a-url"},
                               "environment variable DATABASE_URL: must be a PostgreSQL URL"),
    "DATABASE_URL of MySQL": (["--mode", "status"], {"DATABASE_URL": "mysql://cat:hunter2@db/trading"},
                              "environment variable DATABASE_URL: must be a PostgreSQL URL like "
                              "postgresql://user:password@host:5432/database; got a 'mysql' URL"),
    "override not YAML": (["--mode", "status"], {"CATALYST__RISK__MAX_POSITIONS": "[1"},
                          "environment variable CATALYST__RISK__MAX_POSITIONS: not a YAML value"),
    "config is a folder": (["--config", "config"], {}, "profile file config is a folder"),
    "--from without --replay": (["--force", "--from", "2022-06-01"], {},
                                "agent.py: --from and --to only go with --replay PATH"),
    "--json outside status": (["--force", "--json"], {}, "agent.py: --json only goes with --mode status"),
    "--compare without --replay": (["--force", "--compare"], {}, "agent.py: --compare only goes with --replay PATH"),
    "--seed without --compare": (["--replay", "data/samples/hk", "--seed", "3"], {},
                                 "agent.py: --seed (the random control's) only goes with --replay PATH --compare"),
    "US data with the HK profile": (["--replay", "data/samples/us"], {},
                                    "replay: data/samples/us: no HK bars here, only US bars (AAPL, MSFT): add --market us"),
    "profile without agent_id": (["--config", _profile_without_agent_id, "--mode", "status"], {},
                                 "required key 'agent_id' is missing"),
    "reports folder unwritable": (["--replay", "data/samples/hk", "--from", "2022-06-15", "--to", "2022-06-15"],
                                  {"CATALYST_REPORTS_DIR": _file_in_the_way}, "cannot be written"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_a_usage_or_configuration_error_is_one_line_and_exit_2(database_url, tmp_path, case):
    argv, env, said = USAGE_ERRORS[case]
    argv = [a(tmp_path) if callable(a) else a for a in argv]
    env = {k: v(tmp_path) if callable(v) else v for k, v in env.items()}

    ran = agent_cli(database_url, tmp_path, *argv, **env)

    assert ran.code == 2, ran.out + ran.err
    assert len(ran.lines) == 1 and said in ran.lines[0], ran.err
    assert ran.out == "", "refused before anything ran"
    assert "hunter2" not in ran.err and "max_positions" not in ran.err, "no secret and no echo of the file"


# --- output piped into a reader that stops early: `... | head -1` -----------------------------------------
@pytest.mark.parametrize("command, keep", [
    (["agent.py", "--force"], 1),
    (["agent.py", "--mode", "status"], 3),
    (["signals.py"], 1),
    (["agent.py", "--replay", "data/samples/hk", "--from", "2022-06-15", "--to", "2022-06-15"], 2),
], ids=["force", "status", "signals", "replay"])
def test_output_piped_into_head_ends_quietly_and_loses_no_work(database_url, tmp_path, command, keep):
    env = {**inherited_env(), **NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
           "CATALYST_LOG_DIR": str(tmp_path / "logs"), "CATALYST_REPORTS_DIR": str(tmp_path / "reports"),
           "PYTHONUNBUFFERED": "1"}  # every print reaches the pipe at once, as on a terminal
    proc = subprocess.Popen([sys.executable, *command], cwd=PROJECT, text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = [proc.stdout.readline() for _ in range(keep)]
        proc.stdout.close()  # what `head` does once it has its lines
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()

    assert all(head), head
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    if "--replay" in command:
        assert list((tmp_path / "reports").glob("replay-*/report.json")), "the report is written all the same"
    if "--force" in command:
        assert query(database_url, "SELECT count(*) AS n FROM cycles")[0]["n"] == 2, "the run went on to the end"


# --- errors that were swallowed -------------------------------------------------------------------------
def test_a_control_that_cannot_be_carried_out_is_answered_and_marked_failed(database_url, tmp_path):
    url = migrated(database_url)
    query(url, "ALTER TABLE risk_day ADD CONSTRAINT fault_matrix_no_halts CHECK (NOT halted)")  # the halt cannot be stored
    [halt] = big_bro_sends(url, DEMO_AGENT, "halt")

    ran = agent_cli(url, tmp_path, "--force")

    assert "Big Bro halt: halt failed: CheckViolationError" in ran.out, ran.out + ran.err
    [message] = query(url, "SELECT status, processed_at, data FROM claude_messages WHERE id=$1", halt)
    assert message["status"] == "failed" and message["processed_at"] is not None
    assert "CheckViolationError" in json.loads(message["data"])["failure"]
    [answer] = query(url, "SELECT subject, body FROM claude_messages WHERE reply_to_id=$1", halt)
    assert answer["subject"] == "[demo] halt: NOT done" and "halt failed" in answer["body"]


def test_a_bug_while_reading_good_bars_is_a_failure_not_bad_usage(database_url, tmp_path, monkeypatch, capsys,
                                                                 restore_logging):
    """Exit 2 says "you gave something wrong"; a bug of ours reading good data is exit 1 and says so.
    (A bug cannot be produced by real input, so this one is injected.)"""
    import agent
    import runner.sessions as sessions
    def broken_reader(*_args, **_kwargs):
        raise KeyError("time_key")
    monkeypatch.setattr(sessions, "load_bars", broken_reader)

    code = agent.main(["--replay", "data/samples/hk"], env={
        **NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
        "CATALYST_LOG_DIR": str(tmp_path / "logs"), "CATALYST_REPORTS_DIR": str(tmp_path / "reports")})
    err = capsys.readouterr().err

    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("replay failed while reading data/samples/hk: KeyError: 'time_key' (a bug;")


def test_the_decision_model_call_gives_up_on_a_closed_port_on_the_wall_clock_too():
    """The same retries as on the simulated clock (three attempts, then the connection error)."""
    import anthropic

    from runner.brains import ClaudeBrain
    from core.clock import WallClock
    from config.settings import load_profile, profile_path

    profile = load_profile(profile_path("hk"), {})
    clock = WallClock()

    async def ask():
        client = anthropic.AsyncAnthropic(api_key="sk-ant-fault-matrix", base_url=closed_port_url(), max_retries=0)
        try:
            await ClaudeBrain(client, profile, spend=None)._create(
                clock, profile.models.decision, [{"role": "user", "content": "hello"}])
        finally:
            await client.close()

    with pytest.raises(anthropic.APIConnectionError):
        clock.run(ask())


def test_a_broken_alerts_module_stops_the_run_instead_of_silencing_urgent_alerts(database_url, tmp_path):
    env = {**inherited_env(), **NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
           "CATALYST_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['ops.alerts'] = None  # as if alerts.py failed to import\n"
         "import agent; sys.exit(agent.cli())", "--force"],
        cwd=PROJECT, text=True, capture_output=True, timeout=120, env=env)

    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("run failed: urgent alerts cannot be sent: alerts.py does not import ("), line
    assert "ENTRY" not in proc.stdout


def test_a_replay_delivers_its_waiting_big_bro_events_when_it_ends(database_url, pg_server, tmp_path, capsys,
                                                                   restore_logging):
    """Big Bro's database is unreachable while the replay trades and back just before it ends: the
    events that waited in the replay's outbox are delivered by its last step, not left in a file
    that nothing would ever read (the next replay has another agent id)."""
    import agent

    class BackAfterTheLastSession:
        """stdout that brings Big Bro's database up when the last session's line is printed."""

        def __init__(self, stream):
            self.stream = stream
            self.up = False

        def write(self, text):
            if not self.up and text.startswith("  2022-06-15 Wed:"):
                pg_server._server.psql("CREATE DATABASE research_later;")
                self.up = True
            return self.stream.write(text)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    out = BackAfterTheLastSession(sys.stdout)
    with contextlib.redirect_stdout(out):
        code = agent.main(["--replay", "data/samples/hk", "--from", "2022-06-14", "--to", "2022-06-15"], env={
            **NO_SECRETS, "DATABASE_URL": database_url, "RESEARCH_DATABASE_URL": pg_server.uri("research_later"),
            "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
            "CATALYST_REPORTS_DIR": str(tmp_path / "reports")})
    capsys.readouterr()

    assert code == 0 and out.up
    assert not list((tmp_path / "var").glob("outbox-*.jsonl")), "every waiting event was delivered"
    delivered = query(pg_server.uri("research_later"), "SELECT from_agent, subject FROM claude_messages")
    sent = [line for line in (tmp_path / "logs" / "agent.log").read_text().splitlines()
            if "consciousness_notify: event " in line]
    assert len(delivered) == len(sent) > 0
    assert all(m["from_agent"].startswith("intl_claude-replay-") for m in delivered)
    assert all(m["subject"].startswith("[replay] ") for m in delivered)


def test_a_database_host_that_never_answers_ends_a_simulated_clock_run_with_one_line(tmp_path):
    """asyncpg's connect timeout runs on the loop's timers: under the simulated clock it never fired."""
    with silent_api() as silent:
        url = silent.replace("http://", "postgresql://catalyst:pw@") + "/trading"
        ran = agent_cli(url, tmp_path, "--force", timeout=60)

    assert ran.code == 1, ran.out + ran.err
    assert ran.lines == [f"run failed: cannot connect to the trading database at {url.split('@')[1]}: TimeoutError"]
