"""`canal provider show|run`: the NIP-85 provider's key, and one publishing run on demand."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from libs.config import Settings, get_settings
from libs.nostr.bech32 import npub_encode
from libs.nostr.keys import pubkey_of
from libs.service_key import parse_secret, service_key


def published_items() -> list[str]:
    """`<kind>:<tag>` of every tag canal publishes (what a user names in a kind 10040 list)."""
    from services.query.provider.assertions import NOTE_KINDS, NOTE_TAGS, USER_KIND, USER_TAGS

    return [f"{USER_KIND}:{t}" for t, _ in USER_TAGS] + [f"{k}:{t}" for k in NOTE_KINDS for t, _ in NOTE_TAGS]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `canal provider` on the CLI's subcommands."""
    p = sub.add_parser("provider", help="the NIP-85 provider (Trusted Assertions): its key, a run now")
    psub = p.add_subparsers(dest="action", required=True)
    ps = psub.add_parser("show", help="the provider's public key (npub and hex), relays and kind 10040 entries")
    ps.add_argument("--json", action="store_true")
    pr = psub.add_parser("run", help="publish what changed now, through the running query service")
    pr.add_argument("--now", type=int, default=None, help="pin the clock (unix seconds)")


def _engine(settings: Settings) -> Any:
    from libs.db.engine import make_engine
    from tools.cli.up import database_url_or_exit

    return make_engine(database_url_or_exit(settings), pool_size=2)


def _secret(settings: Settings) -> bytes:
    if settings.service_nsec:
        return parse_secret(settings.service_nsec)
    engine = _engine(settings)
    try:
        return service_key(engine)
    finally:
        engine.dispose()


def _show(settings: Settings, as_json: bool) -> int:
    from services.query.provider.runner import relay_list, windows

    pubkey = pubkey_of(_secret(settings))
    relays = relay_list(settings)
    entries = [[item, pubkey, relays[0]] if relays else [item, pubkey] for item in published_items()]
    wins = ["all", *windows(settings)]
    info = {"pubkey": pubkey, "npub": npub_encode(pubkey), "relays": relays, "windows": wins,
            "every_s": settings.provider_every_s, "kind_10040_tags": entries}
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"npub   {info['npub']}\nhex    {pubkey}")
    print(f"relays {', '.join(relays) if relays else '(none: set PROVIDER_RELAYS to publish)'}")
    print(f"windows {', '.join(wins)}, every {settings.provider_every_s} s")
    print("kind 10040 tags a user adds to trust these numbers:")
    for entry in entries:
        print("  " + json.dumps(entry))
    return 0


async def _run(settings: Settings, now: int | None) -> int:
    import grpc

    from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
    from services.query.provider.runner import relay_list, run_provider

    if not relay_list(settings):
        print("canal: PROVIDER_RELAYS is empty: nothing to publish to", file=sys.stderr)
        return 2
    engine = _engine(settings)
    try:
        async with grpc.aio.insecure_channel(settings.query_addr) as channel:
            stats = await run_provider(engine, qpb_grpc.QueryServiceStub(channel), settings, now)
    finally:
        engine.dispose()
    print(json.dumps(stats.as_dict()))
    return 1 if stats.errors or stats.refused else 0


def provider(args: argparse.Namespace) -> int:
    """show | run."""
    settings = get_settings()
    if args.action == "show":
        return _show(settings, args.json)
    return asyncio.run(_run(settings, args.now))
