"""Run the consciousness MCP server: settings, databases, then stdio or streamable HTTP.

* stdio (default): for Claude Desktop / Claude Code, which start the server themselves.
* ``--http PORT``: streamable HTTP at ``http://HOST:PORT/mcp``, HOST 127.0.0.1 unless ``--host``.
  With ``CATALYST_MCP_TOKEN`` set, every request must carry ``Authorization: Bearer <token>``
  (else 401). Without a token the server only listens on a loopback address: any other host is
  refused (exit 3).

Exit codes: 0 stopped normally; 1 could not run (database unreachable, port taken); 2 bad usage
or configuration; 3 refused for safety.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Mapping, Sequence

from config.settings import PROJECT_DIR, ConfigError, Profile, load_profile, load_secrets, profile_path, read_environment
from ops.logsetup import RedactSecrets, setup_logging
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED

log = logging.getLogger("catalyst.mcp")

TOKEN_VAR = "CATALYST_MCP_TOKEN"
MIN_TOKEN_CHARS = 16
MARKETS = ("hk", "us")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"consciousness_mcp.py: {message} (see --help)\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _Parser(prog="consciousness_mcp.py", description=(
        "Catalyst's consciousness MCP server for Big Bro and the trader (stdio unless --http)"))
    p.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT (0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on with --http (default 127.0.0.1; others need CATALYST_MCP_TOKEN)")
    args = p.parse_args(argv)
    if args.http is not None and not 0 <= args.http <= 65535:
        p.error(f"--http {args.http}: a port is 0 to 65535")
    if args.http is None and args.host != "127.0.0.1":
        p.error("--host only applies with --http PORT")
    return args


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)

    env = read_environment(env)
    try:
        secrets = load_secrets(env)
        profiles = [load_profile(profile_path(m), env) for m in MARKETS]
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    token = (env.get(TOKEN_VAR) or "").strip() or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        print(f"{TOKEN_VAR} is too short: use at least {MIN_TOKEN_CHARS} random characters "
              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)", file=sys.stderr)
        return EXIT_USAGE
    if args.http is not None and token is None and not is_loopback(args.host):
        print(f"refused: --host {args.host} is reachable from other machines and {TOKEN_VAR} is not set; "
              f"set a token or listen on 127.0.0.1", file=sys.stderr)
        return EXIT_REFUSED
    secret_values = secrets.secret_values() + ([token] if token else [])
    redactor = RedactSecrets(secret_values)
    setup_logging(Path(env.get("CATALYST_LOG_DIR") or PROJECT_DIR / "logs"), secret_values)
    try:
        return asyncio.run(_serve(args, secrets, profiles, token, redactor))
    except KeyboardInterrupt:
        return EXIT_OK


async def _serve(args: argparse.Namespace, secrets, profiles: list[Profile], token: str | None,
                 redactor: RedactSecrets) -> int:
    from core.clock import WallClock
    from oversight.agents import AgentRegistry
    from oversight.server import build_server
    from oversight.service import Oversight
    from oversight.store import OversightStore
    from store.db import DatabaseError, open_databases

    try:
        dbs = await open_databases(*secrets.database_urls(), secrets.var_dir, secrets.secret_values())
    except DatabaseError as exc:
        print(f"consciousness MCP server: {redactor.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    try:
        transport = "stdio" if args.http is None else "http"
        oversight = Oversight(OversightStore(dbs.trading, dbs.research), AgentRegistry(profiles), WallClock(), transport)
        where = f"embedded PostgreSQL {dbs.embedded.data_dir}" if dbs.embedded else dbs.trading.where
        if args.http is None:
            server = build_server(oversight, redactor.redact)
            print(f"consciousness MCP server on stdio ({where})", file=sys.stderr, flush=True)
            log.info("consciousness MCP server started on stdio (%s)", where)
            await server.run_stdio_async()
            return EXIT_OK
        return await _serve_http(args, oversight, redactor, token, where)
    finally:
        await dbs.close()


async def _serve_http(args: argparse.Namespace, oversight, redactor: RedactSecrets, token: str | None,
                      where: str) -> int:
    import uvicorn

    from oversight.server import build_server

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.http))
    except OSError as exc:
        sock.close()
        print(f"consciousness MCP server: cannot listen on {args.host}:{args.http}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"http://{host}:{port}/mcp"
    server = build_server(oversight, redactor.redact, bearer_token=token, public_url=url)
    app = server.streamable_http_app(host=args.host)
    guard = "bearer token required" if token else f"no token: loopback only (set {TOKEN_VAR} to require one)"
    print(f"consciousness MCP server on {url} (streamable HTTP; {guard}; {where})", file=sys.stderr, flush=True)
    log.info("consciousness MCP server started on %s (%s; %s)", url, guard, where)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        sock.close()
    return EXIT_OK
