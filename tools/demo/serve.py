"""`canal serve demo-relay`: the local demo relay as its own process (what `canal up` runs in demo mode).

It starts a LocalRelay on DEMO_RELAY_PORT (any free port when that one is taken), publishes the
generated network to it over websockets, then writes the relay's URL to the ready file that
`canal up` waits for before it starts ingest: ingest then reads the demo relay exactly as it
reads a public one (a finished relay, then live events). Afterwards it trickles new reactions so
rolling windows and freshness move. The generator's `now` is kept in the database, so a restart
re-publishes the same events (all duplicates for ingest) instead of a time-shifted copy.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from sqlalchemy import Engine, text

from libs.config import Settings
from libs.db.engine import make_engine
from tools.demo.generator import generate
from tools.demo.live import trickle
from tools.demo.relay import DemoRelay, start_local_relay

log = logging.getLogger(__name__)


def ready_file(settings: Settings) -> Path:
    """Where the demo relay writes its URL once it holds the whole generated network."""
    return settings.data_dir / "demo-relay.url"


def demo_now(engine: Engine) -> int:
    """The generator's clock, fixed at the first run (kept in ingest_state)."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ingest_state (name, value) VALUES ('demo_now', :n) ON CONFLICT DO NOTHING"),
                     {"n": int(time.time())})
        return int(conn.execute(text("SELECT value FROM ingest_state WHERE name = 'demo_now'")).scalar_one())


async def _start(settings: Settings) -> tuple[DemoRelay, list[dict]]:  # type: ignore[type-arg]
    engine = make_engine(settings.database_url or "", pool_size=1)
    try:
        now = await asyncio.to_thread(demo_now, engine)
    finally:
        engine.dispose()
    events = await asyncio.to_thread(generate, settings.demo_seed, now)
    try:
        relay, _ = await start_local_relay([], port=settings.demo_relay_port)
    except Exception:  # the usual port is taken: any port will do (ingest's cursor row is per URL)
        relay, _ = await start_local_relay([])
    log.info("demo relay on %s: publishing %d generated events", relay.url, len(events))
    await relay.publish(events)
    return relay, events


async def serve_demo_relay(settings: Settings) -> None:
    """Run the demo relay until SIGTERM/SIGINT."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL must be set (`canal up` starts the embedded server and sets it)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    marker = ready_file(settings)
    marker.unlink(missing_ok=True)
    relay, events = await _start(settings)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(relay.url)
        await trickle(relay, events, settings.demo_seed, stop)
    finally:
        marker.unlink(missing_ok=True)
        relay.stop()
