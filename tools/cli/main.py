"""`canal`: the one command line for running, operating and measuring the suite."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from libs.config import get_settings
from tools.cli import provider as provider_cli
from tools.cli import query_cmds as query_cli
from tools.cli import track as track_cli

SERVICES = ("ingest", "compactor", "query", "worker", "gateway", "demo-relay")


def _serve(name: str) -> int:
    try:
        return _serve_until_stopped(name)
    except KeyboardInterrupt:  # a signal re-raised after a graceful stop (uvicorn does this)
        return 0


def _serve_until_stopped(name: str) -> int:
    settings = get_settings()
    from libs.telemetry import setup_logging

    setup_logging(f"canal-{name}", settings.log_level)
    if name == "ingest":
        from services.ingest.server import serve as ingest_serve

        asyncio.run(ingest_serve(settings))
    elif name == "compactor":
        from services.compactor.server import serve as compactor_serve

        asyncio.run(compactor_serve(settings))
    elif name == "query":
        from services.query.server import serve as query_serve

        asyncio.run(query_serve(settings))
    elif name == "worker":
        from services.query.worker import serve as worker_serve

        asyncio.run(worker_serve(settings))
    elif name == "gateway":
        from services.gateway.server import serve as gateway_serve

        asyncio.run(gateway_serve(settings))
    elif name == "demo-relay":
        from tools.demo.serve import serve_demo_relay

        asyncio.run(serve_demo_relay(settings))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from tools.cli.up import up

    return up(get_settings())


def _cmd_migrate(args: argparse.Namespace) -> int:
    from libs.db.migrate import downgrade, upgrade
    from tools.cli.up import database_url_or_exit

    url = database_url_or_exit(get_settings())
    if args.down_to:
        from alembic.util import CommandError

        try:
            downgrade(url, args.down_to)
        except CommandError as err:
            print(f"canal: cannot revert to {args.down_to!r}: {err} (revisions are 0001 to the newest, "
                  "e.g. 0006; nothing was changed)", file=sys.stderr)
            return 2
        print(f"migrations reverted to {args.down_to}")
        return 0
    upgrade(url)
    print("migrations applied")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from libs.db.engine import make_engine
    from tools.cli.importing import run_import
    from tools.cli.up import database_url_or_exit

    return run_import(args, make_engine(database_url_or_exit(get_settings())))


def _cmd_keys(args: argparse.Namespace) -> int:
    from tools.cli.admin import keys

    return keys(args)


def _cmd_flag(args: argparse.Namespace) -> int:
    from tools.cli.admin import flag

    return flag(args)


def _cmd_drift(args: argparse.Namespace) -> int:
    from tools.drift.harness import main as drift_main

    return drift_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from tools.bench.run import main as bench_main

    return bench_main(args)


def _cmd_load(args: argparse.Namespace) -> int:
    from tools.load.run import main as load_main

    return load_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test)."""
    p = argparse.ArgumentParser(prog="canal", description="Canonical analytics windowing for Nostr.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every service (embedded PostgreSQL/Redis when URLs are unset)")
    m = sub.add_parser("migrate", help="apply database migrations")
    m.add_argument("--down-to", metavar="REVISION", help="revert to this revision instead (e.g. 0006 before "
                   "running an older image; docs/rollout.md)")
    s = sub.add_parser("serve", help="run one service in the foreground")
    s.add_argument("service", choices=SERVICES)
    i = sub.add_parser("import", help="import events from a JSONL or JSON-array file, .gz, or - (stdin)")
    i.add_argument("file", help="a JSONL or JSON-array file, gzip-compressed or not; - reads standard input")
    i.add_argument("--batch", type=int, default=None, help="events per transaction (default: the importer's, 2,500)")
    i.add_argument("--quiet", action="store_true")
    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create")
    kc.add_argument("name")
    kc.add_argument("--scope", action="append", choices=["read:any", "admin"], default=None)
    ksub.add_parser("list")
    kr = ksub.add_parser("revoke")
    kr.add_argument("key_id")
    f = sub.add_parser("flag", help="show or set the canonical-path feature flag")
    fsub = f.add_subparsers(dest="action", required=True)
    fsub.add_parser("show")
    fs = fsub.add_parser("set")
    fs.add_argument("mode", choices=["off", "cohort", "percent", "on"])
    fs.add_argument("--percent", type=int, default=0)
    fs.add_argument("--cohort", nargs="*", default=[])
    d = sub.add_parser("drift", help="compare canonical and legacy answers; non-zero exit on any drift")
    d.add_argument("--out", default="docs/reports/drift")
    d.add_argument("--samples", type=int, default=40)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--now", type=int, default=None, help="pin the clock (unix seconds) to reproduce a report")
    b = sub.add_parser("bench", help="benchmarks against the legacy scan and DuckDB")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--out", default="bench")
    ld = sub.add_parser("load", help="bounded load test against 127.0.0.1")
    ld.add_argument("--seconds", type=int, default=60)
    ld.add_argument("--out", default="docs/reports/load")
    ld.add_argument("--base-url", default=None, help="a running suite (127.0.0.1 only); default: "
                    "http://127.0.0.1:8080, else start one")
    ld.add_argument("--requests", type=int, default=None, help="request budget (default 200000)")
    ld.add_argument("--api-key", default=None, help="default: the demo key from /ui/config.json")
    track_cli.add_parser(sub)
    provider_cli.add_parser(sub)
    query_cli.add_parsers(sub)
    return p


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": _cmd_up, "migrate": _cmd_migrate, "import": _cmd_import, "keys": _cmd_keys, "flag": _cmd_flag,
    "drift": _cmd_drift, "bench": _cmd_bench, "load": _cmd_load, "track": track_cli.track,
    "provider": provider_cli.provider, "summary": query_cli.summary, "drilldown": query_cli.drilldown,
    "status": query_cli.status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `canal` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args.service)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
