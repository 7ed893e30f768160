"""`canal keys` and `canal flag`: operator commands on the gateway's tables."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from libs.config import get_settings
from libs.db.engine import make_engine
from tools.cli.up import database_url_or_exit


def keys(args: argparse.Namespace) -> int:
    """create | list | revoke API keys (secrets are shown once and stored hashed)."""
    from services.gateway.auth import create_key, list_keys, revoke_key

    engine = make_engine(database_url_or_exit(get_settings()), pool_size=1)
    if args.action == "create":
        scopes = args.scope or ["read:any"]
        key_id, secret = create_key(engine, args.name, scopes)
        print(f"key id: {key_id}\nscopes: {', '.join(scopes)}\nsecret: {secret}\n"
              "Store the secret now: it is kept only as a hash. Send it as 'Authorization: Bearer <secret>'.")
        return 0
    if args.action == "list":
        for row in list_keys(engine):
            state = "revoked" if row["revoked_at"] else "active"
            print(f"{row['id']}  {state:8}  {','.join(row['scopes']):16}  {row['name']}")
        return 0
    if revoke_key(engine, args.key_id):
        print(f"revoked {args.key_id}")
        return 0
    print(f"canal: no active key with id {args.key_id!r} (see `canal keys list`)", file=sys.stderr)
    return 1


def flag(args: argparse.Namespace) -> int:
    """show | set the canonical-path flag; effective on every gateway within seconds."""
    from services.gateway.flags import get_flag, set_flag

    engine = make_engine(database_url_or_exit(get_settings()), pool_size=1)
    if args.action == "show":
        print(json.dumps(get_flag(engine).as_dict(), indent=2))
        return 0
    try:
        result = set_flag(engine, args.mode, args.percent, list(args.cohort), by=f"cli:{getpass.getuser()}")
    except ValueError as exc:
        print(f"canal: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.as_dict(), indent=2))
    return 0
