"""`eventstore serve`: a local, read-only web viewer of the log (the `web` extra).

Starlette + uvicorn + Jinja2: Starlette is a small ASGI toolkit (routing, streaming
responses for server-sent events, a test client) without an ORM, validation layer or
dependency injection we would not use, uvicorn is the ASGI server it is made with, and
Jinja2 autoescapes the templates, which matters when every event is attacker-controlled
text. All three are maintained by active teams and pull in nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from ...errors import MissingDependencyError
from ...store import EventStore
from ..base import note, open_store

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _otlp_receiver() -> Any:
    """The OTLP/HTTP receiver of the OpenTelemetry integration, when it is installed."""
    try:
        module = importlib.import_module("eventstore.integrations.opentelemetry")
    except ImportError:
        return None
    return getattr(module, "otlp_receiver", None)


@click.command("serve")
@click.option("--db", "db", metavar="URL", help="Store URL (default: the global --db).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Anything but loopback exposes personal data.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--token", metavar="T", envvar="EVENTSTORE_TOKEN",
              help="Access token (default: a new random one, printed in the URL).")
@click.option("--checkpoints", type=click.Path(exists=True, file_okay=False, path_type=Path),
              metavar="DIR", help="A directory of checkpoints (a store's checkpoint_dir=): "
              "the integrity page shows the latest and verifies against it (read only).")
def serve_cmd(db: str | None, host: str, port: int, token: str | None,
              checkpoints: Path | None) -> None:
    """A read-only web viewer of the log: conversations, transcripts, costs and budgets,
    violations, a live tail, subscriptions and integrity (tree head, latest checkpoint,
    verify now), with the same data as JSON under /api/.

    Every request needs the token: open the printed URL once (?token=..., then a
    cookie), or send `Authorization: Bearer <token>`.
    """
    try:
        import uvicorn

        from .access import new_token
        from .web import INDEX_BEFORE_SERVING, build_app
    except ImportError as exc:
        raise MissingDependencyError(
            f"eventstore serve needs the web extra ({exc.name} is missing): "
            "pip install 'eventstore[web]'"
        ) from exc
    url: str = db or click.get_current_context().find_root().params["db"]
    token = token or new_token()
    if not is_loopback(host):
        note(f"warning: listening on {host}, not loopback: anyone who can reach this "
             "address and has the token can read the log, which holds personal data")

    async def announce(server: Any) -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()
        shown = bound[0] if bound[0] not in ("0.0.0.0", "::") else socket.gethostname()
        if ":" in shown:
            shown = f"[{shown}]"
        sys.stdout.write(f"http://{shown}:{bound[1]}/?token={token}\n")
        sys.stdout.flush()
        note("eventstore serve: open the address above; Ctrl-C stops it")

    master_key_file = click.get_current_context().find_root().params.get("master_key_file")

    async def main() -> None:
        # Opened here, before the server, so a missing database or a bad URL is the usual
        # one-line error rather than a failed ASGI lifespan.
        async with open_store(url, master_key_file) as store:

            @contextlib.asynccontextmanager
            async def opened() -> AsyncIterator[EventStore]:
                yield store

            head = await store.head()
            if head > INDEX_BEFORE_SERVING:
                note(f"indexing {head} events in the background: the conversation and cost "
                     "pages answer once it is done")
            app = build_app(opened, token, otlp=_otlp_receiver(), checkpoints=checkpoints)
            config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                    lifespan="on", access_log=False)
            server = uvicorn.Server(config)
            waiter = asyncio.create_task(announce(server))
            try:
                await server.serve()
            finally:
                waiter.cancel()
            if not server.started:
                raise click.ClickException(f"could not serve on {host}:{port}")

    asyncio.run(main())


COMMANDS = (serve_cmd,)
