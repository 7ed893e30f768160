"""Run the gateway: uvicorn on HOST:PORT serving the app, gRPC client to QUERY_ADDR."""

from __future__ import annotations

import logging
import signal
import sys

import uvicorn

from libs.config import Settings
from libs.telemetry import setup_metrics, setup_tracing
from services.gateway.app import create_app, default_channel_factory

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers), then drain and close the clients."""
    setup_tracing("canal-gateway", settings)
    setup_metrics("canal-gateway", settings)  # before create_app: its instruments bind to this provider
    app = create_app(settings, query_channel_factory=default_channel_factory(settings))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            access_log=False, lifespan="on", proxy_headers=True, timeout_graceful_shutdown=10,
                            log_config=None)
    log.info("gateway listening on http://%s:%d (query service at %s)", settings.host, settings.port,
             settings.query_addr)
    # uvicorn re-raises SIGTERM once it has drained; with the default handler the process then dies with
    # -15 although it stopped cleanly. Exit 0 instead (SIGINT already ends as KeyboardInterrupt -> 0).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    await uvicorn.Server(config).serve()
