"""`canal summary`, `canal drilldown` and `canal status`: answers and operating state over gRPC.

summary and drilldown ask the query service (QUERY_ADDR) exactly as the gateway does, with the key in
any form (hex, npub, nprofile or NIP-05, resolved here) and no sync limit (a terminal can wait), and
print a table, the REST answer's JSON (`--json`: `{data, meta}`) or the CSV of a job result (`--csv`).
status reads ingest (INGEST_ADDR: relays, their lag and cursors) and the compactor (COMPACTOR_ADDR:
tier watermarks and retention horizons).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from canal.common.v1 import types_pb2
from canal.compactor.v1 import compactor_service_pb2 as cpb
from canal.compactor.v1 import compactor_service_pb2_grpc as cpb_grpc
from canal.ingest.v1 import ingest_service_pb2 as ipb
from canal.ingest.v1 import ingest_service_pb2_grpc as ipb_grpc
from canal.query.v1 import query_service_pb2 as qpb
from canal.query.v1 import query_service_pb2_grpc as qpb_grpc
from libs import query_contract as contract
from libs.config import get_settings
from libs.envelope import drilldown_payload, summary_payload
from libs.nostr.bech32 import npub_encode
from libs.nostr.identity import resolve_key
from libs.rpc import error_info_from
from services.gateway.csv_export import result_csv

T = TypeVar("T")
QUERY_TIMEOUT_S = 120.0  # no sync limit here: a heavy window is computed while the terminal waits
STATUS_TIMEOUT_S = 5.0
WINDOWS = ("1h", "24h", "7d", "30d", "90d", "365d", "all")


class CliError(Exception):
    """A failure to report on stderr as `canal: …` with exit status 2."""


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register summary, drilldown and status on the CLI's subcommands."""
    s = sub.add_parser("summary", help="every metric of a key over a window (query service, gRPC)")
    _target_args(s)
    s.add_argument("--metrics", default="", help="comma-separated metric names (default: all)")
    d = sub.add_parser("drilldown", help="a window broken down by note, counterparty, kind or time (gRPC)")
    _target_args(d)
    d.add_argument("--dimension", required=True, choices=contract.DIMENSIONS)
    d.add_argument("--metric", default="", help="note/counterparty: the sort metric; time: the one metric")
    d.add_argument("--granularity", default="", choices=["", *contract.GRANULARITIES],
                   help="time buckets (default day)")
    d.add_argument("--tz", default="", help="IANA time zone of time buckets (default UTC)")
    d.add_argument("--limit", type=int, default=contract.DEFAULT_PAGE, help=f"rows per page (<= {contract.MAX_PAGE})")
    d.add_argument("--all", action="store_true", help="follow every page (note, counterparty)")
    st = sub.add_parser("status", help="relays and their lag (ingest), watermarks and retention (compactor)")
    st.add_argument("--json", action="store_true")


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("key", help="64 hex, npub1…, nprofile1… or NIP-05 name@domain")
    p.add_argument("--window", choices=WINDOWS, default=None, help="a rolling window ending now (default 7d)")
    p.add_argument("--start", default=None, help="custom window start: unix seconds or RFC 3339")
    p.add_argument("--end", default=None, help="custom window end (exclusive)")
    p.add_argument("--legacy", action="store_true", help="answer by the legacy raw scan (the drift reference)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the REST answer's {data, meta}")
    fmt.add_argument("--csv", action="store_true", help="CSV (summary: metric,value; drilldown: one line per row)")


def summary(args: argparse.Namespace) -> int:
    """`canal summary KEY`."""
    return _run(lambda: _summary(args))


def drilldown(args: argparse.Namespace) -> int:
    """`canal drilldown KEY --dimension D`."""
    return _run(lambda: _drilldown(args))


def status(args: argparse.Namespace) -> int:
    """`canal status`: 0 when ingest and the compactor both answered, else 2 (with what did answer)."""
    return _run(lambda: _status(args))


def _run(work: Callable[[], int]) -> int:
    try:
        return work()
    except CliError as err:
        print(f"canal: {err}", file=sys.stderr)
        return 2


def _call(addr: str, env: str, fn: Callable[[grpc.Channel], T]) -> T:
    """One call on a channel to `addr`; CliError naming the service's error, or how to reach it."""
    with grpc.insecure_channel(addr) as channel:
        try:
            return fn(channel)
        except grpc.RpcError as exc:
            info = error_info_from(exc)
            if info is not None and info.code:
                raise CliError(info.message + (f"\n  hint: {info.hint}" if info.hint else "")) from None
            raise CliError(f"the service at {addr} did not answer ({exc.code().name}); start the suite with "
                           f"`canal up` (or set {env})") from None


def _window(args: argparse.Namespace, now: int) -> types_pb2.WindowSpec:
    if (args.start is None) != (args.end is None):
        raise CliError("give both --start and --end, or neither")
    if args.start is not None and args.window is not None:
        raise CliError("give --window or --start/--end, not both")
    if args.start is not None:
        return types_pb2.WindowSpec(start=args.start, end=args.end, now=now)
    return types_pb2.WindowSpec(window=args.window or "7d", now=now)


def _pubkey(value: str) -> str:
    try:
        return resolve_key(value).pubkey
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _source(args: argparse.Namespace) -> int:
    return types_pb2.SOURCE_LEGACY if args.legacy else types_pb2.SOURCE_CANONICAL


def _summary(args: argparse.Namespace) -> int:
    pubkey, now = _pubkey(args.key), int(time.time())
    request = qpb.GetSummaryRequest(pubkey=pubkey, window=_window(args, now), source=_source(args),
                                    metrics=[m.strip() for m in args.metrics.split(",") if m.strip()])
    addr = get_settings().query_addr
    resp = _call(addr, "QUERY_ADDR", lambda ch: qpb_grpc.QueryServiceStub(ch).GetSummary(
        request, timeout=QUERY_TIMEOUT_S))
    payload = summary_payload(resp)
    if not _emit_machine(args, payload):
        print(_heading(pubkey, payload["meta"]))
        _table(["metric", "value"], [[name, f"{value:,}"] for name, value in payload["data"]["metrics"].items()])
    return 0


def _drilldown(args: argparse.Namespace) -> int:
    pubkey, now = _pubkey(args.key), int(time.time())
    request = qpb.GetDrilldownRequest(pubkey=pubkey, window=_window(args, now), dimension=args.dimension,
                                      metric=args.metric, granularity=args.granularity, tz=args.tz,
                                      page_size=args.limit, source=_source(args))
    addr = get_settings().query_addr
    payload: dict[str, Any] | None = None
    while True:
        resp = _call(addr, "QUERY_ADDR", lambda ch: qpb_grpc.QueryServiceStub(ch).GetDrilldown(
            request, timeout=QUERY_TIMEOUT_S))
        page = drilldown_payload(resp, now)
        if payload is None:
            payload = page
        else:
            payload["data"]["rows"].extend(page["data"]["rows"])
            payload["data"]["next_cursor"] = page["data"]["next_cursor"]
        if not (args.all and resp.next_page_token):
            break
        request.page_token = resp.next_page_token
    if not _emit_machine(args, payload):
        print(_heading(pubkey, payload["meta"]))
        header, rows = _drilldown_rows(args.dimension, payload["data"]["rows"])
        _table(header, rows)
        if payload["data"]["next_cursor"]:
            print(f"(first {len(rows)} rows; --all for every page, or --limit up to {contract.MAX_PAGE})")
    return 0


def _emit_machine(args: argparse.Namespace, payload: dict[str, Any]) -> bool:
    if args.json:
        print(json.dumps(payload, indent=2))
    elif args.csv:
        sys.stdout.write(result_csv(payload))
    else:
        return False
    return True


def _drilldown_rows(dimension: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    metrics: list[str] = []
    for row in rows:
        metrics.extend(m for m in row["metrics"] if m not in metrics)
    first = {"note": ["note", "deleted"], "counterparty": ["npub", "name"], "kind": ["kind"],
             "time": ["start", "end"]}[dimension]

    def lead(row: dict[str, Any]) -> list[str]:
        if dimension == "note":
            return [row["key"], "yes" if row["deleted"] else ""]
        if dimension == "counterparty":
            return [row["npub"] or row["key"], row["display_name"] or ""]
        if dimension == "kind":
            return [str(row["kind"])]
        return [_when(row["start"]), _when(row["end"])]

    return first + metrics, [lead(r) + [f"{r['metrics'].get(m, 0):,}" for m in metrics] for r in rows]


def _heading(pubkey: str, meta: dict[str, Any]) -> str:
    window, fresh = meta["window"], meta["freshness"]
    line = (f"{npub_encode(pubkey)}  {window['label']} {_when(window['start'])} → {_when(window['end'])}  "
            f"{meta['source']}, as of {_when(fresh['as_of'])} (lag {fresh['lag_seconds']} s)")
    if fresh["stale"]:
        line += "  STALE"
    if meta["partial"]:
        line += "  partial: " + ", ".join(meta["partial_reasons"])
    return line


def _status(args: argparse.Namespace) -> int:
    settings, now = get_settings(), int(time.time())
    report: dict[str, Any] = {}
    failures = []
    try:
        ingest = _call(settings.ingest_addr, "INGEST_ADDR", lambda ch: ipb_grpc.IngestServiceStub(ch).GetIngestStatus(
            ipb.GetIngestStatusRequest(), timeout=STATUS_TIMEOUT_S))
        report["ingest"] = {
            "as_of": ingest.as_of, "lag_seconds": max(0, now - ingest.as_of) if ingest.as_of else None,
            "events_admitted": ingest.events_admitted, "events_rejected": ingest.events_rejected,
            "facts": ingest.facts,
            "relays": [{"url": r.url, "connected": r.connected, "lag_seconds": r.lag_seconds, "cursor": r.cursor,
                        "events_received": r.events_received, "last_event_at": r.last_event_at,
                        "last_error": r.last_error} for r in ingest.relays]}
    except CliError as err:
        failures.append(f"ingest: {err}")
    try:
        def compactor(ch: grpc.Channel) -> tuple[cpb.GetWatermarksResponse, cpb.GetRetentionResponse]:
            stub = cpb_grpc.CompactorServiceStub(ch)
            return (stub.GetWatermarks(cpb.GetWatermarksRequest(), timeout=STATUS_TIMEOUT_S),
                    stub.GetRetention(cpb.GetRetentionRequest(), timeout=STATUS_TIMEOUT_S))

        marks, retention = _call(settings.compactor_addr, "COMPACTOR_ADDR", compactor)
        report["watermarks"] = [{"tier": m.tier, "watermark": m.watermark,
                                 "behind_seconds": max(0, now - m.watermark) if m.watermark else None,
                                 "dirty_buckets": m.dirty_buckets, "updated_at": m.updated_at}
                                for m in marks.watermarks]
        report["retention"] = [{"tier": h.tier, "keep_days": h.keep_days, "horizon": h.horizon}
                               for h in retention.horizons]
    except CliError as err:
        failures.append(f"compactor: {err}")
    if args.json:
        print(json.dumps({**report, "errors": failures}, indent=2))
    else:
        _print_status(report)
    for failure in failures:
        print(f"canal: {failure}", file=sys.stderr)
    return 2 if failures else 0


def _print_status(report: dict[str, Any]) -> None:
    ingest = report.get("ingest")
    if ingest is not None:
        lag = "-" if ingest["lag_seconds"] is None else _seconds(ingest["lag_seconds"])
        print(f"ingest: as of {_when(ingest['as_of'])} (lag {lag}); {ingest['events_admitted']:,} events "
              f"admitted, {ingest['events_rejected']:,} rejected, {ingest['facts']:,} facts")
        _table(["relay", "connected", "lag", "cursor", "events", "last event", "last error"],
               [[r["url"], "yes" if r["connected"] else "NO", _seconds(r["lag_seconds"]), _when(r["cursor"]),
                 f"{r['events_received']:,}", _when(r["last_event_at"]), r["last_error"][:60] or "-"]
                for r in ingest["relays"]])
    if "watermarks" in report:
        print("\ncompactor watermarks:")
        _table(["tier", "complete up to", "behind", "dirty buckets", "updated"],
               [[m["tier"], _when(m["watermark"]), "-" if m["behind_seconds"] is None else _seconds(m["behind_seconds"]),
                 f"{m['dirty_buckets']:,}", _when(m["updated_at"])] for m in report["watermarks"]])
        print("\nretention:")
        _table(["tier", "keep", "earliest data"],
               [[h["tier"], f"{h['keep_days']} d" if h["keep_days"] else "forever", _when(h["horizon"]) if h["horizon"]
                 else "everything"] for h in report["retention"]])


def _when(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def _seconds(s: int) -> str:
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def _table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; numbers (right-aligned) are the cells that start with a digit."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if c[:1].isdigit() and "-" not in c[:5] else c.ljust(w)
                         for c, w in zip(cells, widths, strict=True)).rstrip()

    print(line(header))
    for r in rows:
        print(line(r))
    if not rows:
        print("(no rows)")
