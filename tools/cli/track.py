"""`canal track add|remove|list`: the keys TRACK mode follows, through the running ingest service."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

import grpc

from canal.ingest.v1 import ingest_service_pb2 as pb
from canal.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from libs.config import get_settings
from libs.rpc import error_info_from

STATES = {pb.TRACK_STATE_READY: "ready", pb.TRACK_STATE_BACKFILLING: "backfilling"}
TIMEOUT_S = 15.0  # NIP-05 keys are resolved by ingest over HTTP


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `canal track` on the CLI's subcommands."""
    t = sub.add_parser("track", help="keys TRACK mode follows on relays (hex, npub, nprofile or NIP-05)")
    tsub = t.add_subparsers(dest="action", required=True)
    ta = tsub.add_parser("add", help="follow keys from now on; each is backfilled at once")
    ta.add_argument("keys", nargs="+")
    tr = tsub.add_parser("remove", help="stop following keys (their stored data stays)")
    tr.add_argument("keys", nargs="+")
    tl = tsub.add_parser("list", help="tracked keys and their backfill state")
    tl.add_argument("--json", action="store_true")


def _fail(exc: grpc.RpcError, addr: str) -> int:
    info = error_info_from(exc)
    if info is not None and info.code:
        print(f"canal: {info.message}" + (f"\n  hint: {info.hint}" if info.hint else ""), file=sys.stderr)
    else:
        print(f"canal: the ingest service at {addr} did not answer ({exc.code().name}); start the suite with "
              "`canal up` (or set INGEST_ADDR)", file=sys.stderr)
    return 2


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def track(args: argparse.Namespace) -> int:
    """add | remove | list tracked keys over gRPC (IngestService)."""
    addr = get_settings().ingest_addr
    with grpc.insecure_channel(addr) as channel:
        stub = pb_grpc.IngestServiceStub(channel)
        try:
            if args.action == "list":
                resp = stub.ListTrackedKeys(pb.ListTrackedKeysRequest(), timeout=TIMEOUT_S)
                rows = [{"pubkey": k.pubkey, "npub": k.npub, "state": STATES.get(k.state, "backfilling"),
                         "source": k.source, "label": k.label, "added_at": k.added_at, "ready_at": k.ready_at or None}
                        for k in resp.keys]
                if args.json:
                    print(json.dumps({"track_mode": resp.track_mode, "keys": rows,
                                      "discovered_relays": list(resp.discovered_relays)}, indent=2))
                    return 0
                for r in rows:
                    print(f"{r['npub']}  {r['state']:11}  added {_when(r['added_at'])}  {r['source']}"
                          + (f"  ({r['label']})" if r["label"] else ""))
                if not rows:
                    print("no tracked keys: ingest takes every event its relays send")
                for url in resp.discovered_relays:
                    print(f"relay found through NIP-65: {url}")
                return 0
            for key in args.keys:
                if args.action == "add":
                    added = stub.TrackKey(pb.TrackKeyRequest(key=key, source="cli"), timeout=TIMEOUT_S)
                    verb = "tracking" if added.added else "already tracked:"
                    print(f"{verb} {added.key.npub} ({added.key.pubkey}); backfill "
                          f"{STATES.get(added.key.state, 'backfilling')}")
                    if not added.track_mode:
                        print("note: ingest runs untracked (no TRACK at start): it takes every event already; "
                              "restart it to follow only the tracked keys", file=sys.stderr)
                else:
                    removed = stub.UntrackKey(pb.UntrackKeyRequest(key=key), timeout=TIMEOUT_S)
                    print(("stopped tracking " if removed.removed else "was not tracked: ") + key)
        except grpc.RpcError as exc:
            return _fail(exc, addr)
    return 0
