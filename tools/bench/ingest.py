"""Ingest throughput (file and LocalRelay, 1 and 2 processes), duplicate replay, peak RSS, and freshness."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import multiprocessing as mp
import pstats
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from libs.db.engine import make_engine
from services.ingest.importer import IMPORT_BATCH
from tools.bench.stats import summarize_ms

PROFILE_FUNCTIONS = {
    "admission (parse + id + BIP-340 + zap checks)": "admit_items",
    "storage without the lock (COPY events, side rows, profiles, rejects)": "store_batch",
    "derivation under the ingest lock": "derive_locked",
    "  re-derive facts (load + map + write the diff)": "_rederive",
    "  write fact diff + dirty minutes": "_write_fact_diff",
    "commit": "commit",
}


# ----------------------------------------------------------------------------------------- event files

def events_file(cache: Path, users: int, seed: int) -> tuple[Path, int, dict[str, Any]]:
    """A JSONL file of signed events (tools.demo.generator), cached by (seed, users)."""
    path = cache / f"events-s{seed}-u{users}.jsonl"
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        return path, int(info["events"]), info
    began = time.perf_counter()
    events = _generate(seed, users)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev, separators=(",", ":"), ensure_ascii=False) + "\n")
    tmp.replace(path)
    kinds: dict[str, int] = {}
    for ev in events:
        kinds[str(ev["kind"])] = kinds.get(str(ev["kind"]), 0) + 1
    info = {"events": len(events), "kinds": kinds, "generated_at": int(time.time()), "users": users, "seed": seed,
            "generator": _generator_name(), "seconds": round(time.perf_counter() - began, 2)}
    info_path.write_text(json.dumps(info))
    return path, len(events), info


def _generator_name() -> str:
    try:
        import tools.demo.generator  # noqa: F401
    except ImportError:
        return "tools.bench.ingest (reactions and notes signed with libs.nostr.keys)"
    return "tools.demo.generator.generate"


def _generate(seed: int, users: int) -> list[dict[str, Any]]:
    now = int(time.time())
    try:
        from tools.demo.generator import generate
    except ImportError:
        return _fallback_events(seed, users, now)
    return list(generate(seed, now, users=users))


def _fallback_events(seed: int, users: int, now: int) -> list[dict[str, Any]]:
    """Notes and reactions (no zaps: they need the demo generator's invoices)."""
    from libs.nostr.keys import privkey_from_seed, sign_event

    rng = random.Random(seed)
    keys = [privkey_from_seed(f"bench:{seed}:{i}") for i in range(users)]
    out: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for _ in range(users * 60):
        t = now - rng.randint(60, 300 * 86400)
        if not notes or rng.random() < 0.2:
            ev = sign_event(rng.choice(keys), 1, "bench note", [], t)
            notes.append(ev)
        else:
            note = rng.choice(notes)
            ev = sign_event(rng.choice(keys), 7, "+", [["e", note["id"]], ["p", note["pubkey"]]], t)
        out.append(ev)
    rng.shuffle(out)
    return out


def split(path: Path, parts: int, offset: int = 0, limit: int | None = None) -> list[Path]:
    """Disjoint parts of lines [offset, offset + limit) of a JSONL file (round-robin, so each part has the mix)."""
    lines = path.read_bytes().splitlines(keepends=True)
    chosen = lines[offset: offset + limit if limit is not None else None]
    out = []
    for k in range(parts):
        part = path.with_name(f"{path.stem}-o{offset}-n{len(chosen)}-{k}of{parts}.jsonl")
        part.write_bytes(b"".join(chosen[k::parts]))
        out.append(part)
    return out


# ------------------------------------------------------------------------------------- worker pool

def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    import resource

    current = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return round(current, 1), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _file_job(path: str, url: str) -> dict[str, Any]:
    from services.ingest.importer import import_file

    engine = make_engine(url, pool_size=3)
    try:
        t0 = time.time()
        summary = import_file(path, engine, batch=IMPORT_BATCH, progress=False)
        t1 = time.time()
    finally:
        engine.dispose()
    return {"t0": t0, "t1": t1, "items": summary.items, "admitted": summary.admitted,
            "duplicates": summary.duplicates, "rejected": summary.rejected, "facts": summary.facts_inserted}


def _relay_job(relay_url: str, url: str, expected: int) -> dict[str, Any]:
    from services.ingest.relay_client import RelayClient

    engine = make_engine(url, pool_size=3)

    async def run() -> dict[str, Any]:
        client = RelayClient(relay_url, engine)
        t0 = time.time()
        client.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if client.caught_up and client.idle and client.events_received >= expected:
                break
            await asyncio.sleep(0.02)
        t1 = time.time()
        received = client.events_received
        await client.stop()
        return {"t0": t0, "t1": t1, "items": received, "complete": received >= expected}

    try:
        return asyncio.run(run())
    finally:
        engine.dispose()


JOBS: dict[str, Callable[..., dict[str, Any]]] = {"file": _file_job, "relay": _relay_job}


def _worker(inbox: Any, outbox: Any) -> None:
    """A long-lived ingest process: per job, prepare, report ready, wait for go, run, report."""
    import services.ingest.importer  # noqa: F401  (imports are paid once, never timed)

    with contextlib.suppress(ImportError):
        import services.ingest.relay_client  # noqa: F401
    while True:
        msg = inbox.get()
        if msg is None:
            return
        kind, args = msg
        outbox.put(("ready", None))
        inbox.get()  # go
        try:
            result = JOBS[kind](*args)
        except Exception as exc:  # reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}"[:300], "t0": time.time(), "t1": time.time(),
                      "items": 0}
        result["rss_mb"], result["peak_rss_mb"] = _rss_mb()
        outbox.put(("done", result))


class IngestPool:
    """Ingest processes started once (spawned, so imports and warm-up are never timed)."""

    def __init__(self, processes: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self.workers = []
        for _ in range(processes):
            inbox, outbox = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=_worker, args=(inbox, outbox), daemon=True)
            proc.start()
            self.workers.append((proc, inbox, outbox))

    def run(self, kind: str, args_list: Sequence[tuple[Any, ...]], timeout: float = 900) -> dict[str, Any]:
        """One job per worker, released together; throughput over the union of their run times."""
        used = self.workers[: len(args_list)]
        for (_, inbox, _), args in zip(used, args_list, strict=True):
            inbox.put((kind, args))
        for _, _, outbox in used:
            outbox.get(timeout=120)
        for _, inbox, _ in used:
            inbox.put("go")
        reports = [outbox.get(timeout=timeout)[1] for _, _, outbox in used]
        t0 = min(r["t0"] for r in reports)
        t1 = max(r["t1"] for r in reports)
        items = sum(r["items"] for r in reports)
        out: dict[str, Any] = {"processes": len(used), "items": items, "seconds": round(t1 - t0, 3),
                               "events_per_s": round(items / (t1 - t0), 1) if t1 > t0 else None,
                               "rss_mb_per_process": max(r["rss_mb"] for r in reports),
                               "peak_rss_mb_per_process": max(r["peak_rss_mb"] for r in reports)}
        for key in ("admitted", "duplicates", "rejected", "facts"):
            if all(key in r for r in reports):
                out[key] = sum(r[key] for r in reports)
        if any("complete" in r for r in reports):
            out["complete"] = all(r.get("complete", False) for r in reports)
        errors = [r["error"] for r in reports if "error" in r]
        if errors:
            out["error"] = errors[0]
        return out

    def close(self) -> None:
        for _, inbox, _ in self.workers:
            inbox.put(None)
        for proc, _, _ in self.workers:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()


def file_ingest(pool: IngestPool, url: str, parts: Sequence[Path]) -> dict[str, Any]:
    """`canal import` (import_file, batch 1000) of each part in its own process, concurrently."""
    return pool.run("file", [(str(p), url) for p in parts])


def facts_count(url: str) -> int:
    from sqlalchemy import text

    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM facts")).scalar() or 0)
    finally:
        engine.dispose()


# -------------------------------------------------------------------------------------- LocalRelay

class RelayHost:
    """LocalRelays (tools.demo.relay) served from a background event loop in this process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-relay", daemon=True)
        self.thread.start()
        self.relays: list[Any] = []

    def start(self, events: list[dict[str, Any]]) -> tuple[str, int]:
        """A relay seeded with `events`; (url, events it stored)."""
        from tools.demo.relay import start_local_relay

        relay, url = asyncio.run_coroutine_threadsafe(start_local_relay(events), self.loop).result(600)
        self.relays.append(relay)
        return url, len(events) - len(relay.refused)

    def stop(self) -> None:
        for relay in self.relays:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(relay.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def relay_ingest(pool: IngestPool, url: str, events_path: Path, count: int, processes: int,
                 host: RelayHost) -> dict[str, Any]:
    """Relays seeded with disjoint parts of the events; one RelayClient process per relay."""
    lines = events_path.read_text(encoding="utf-8").splitlines()[:count]
    events = [json.loads(line) for line in lines]
    began = time.perf_counter()
    relays = [host.start(events[k::processes]) for k in range(processes)]
    seeded = time.perf_counter() - began
    out = pool.run("relay", [(relay_url, url, stored) for relay_url, stored in relays])
    out["seeded_events"] = sum(stored for _, stored in relays)
    out["seed_seconds"] = round(seeded, 2)
    return out


# ------------------------------------------------------------------------------------- profiling

def profile_ingest(url: str, path: Path, limit: int) -> dict[str, Any]:
    """cProfile of IngestStore.ingest on batches of IMPORT_BATCH (`canal import`'s) in this thread: where an event's time goes."""
    from services.ingest.lines import read_items
    from services.ingest.store import IngestStore

    engine = make_engine(url, pool_size=2)
    store = IngestStore(engine)
    items = [item for _, item in read_items(path)][:limit]
    prof = cProfile.Profile()
    began = time.perf_counter()
    prof.enable()
    for i in range(0, len(items), IMPORT_BATCH):
        store.ingest(items[i: i + IMPORT_BATCH])
    prof.disable()
    wall = time.perf_counter() - began
    engine.dispose()
    stats = pstats.Stats(prof)
    by_name: dict[str, float] = {}
    for (filename, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if func in PROFILE_FUNCTIONS.values() and ("services/ingest" in filename or func == "commit"):
            by_name[func] = max(by_name.get(func, 0.0), cum)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
    return {
        "events": len(items), "batch": IMPORT_BATCH, "wall_s": round(wall, 3),
        "events_per_s_profiled": round(len(items) / wall, 1) if wall else None,
        "phases_s": {label: round(by_name.get(func, 0.0), 3) for label, func in PROFILE_FUNCTIONS.items()},
        "top_self_time": [{"function": f"{Path(k[0]).name}:{k[2]}", "self_s": round(v[2], 3), "calls": v[1]}
                          for k, v in top],
    }


# -------------------------------------------------------------------------------------- freshness

def freshness(url: str, query_address: str, rate: int, seconds: float, seed: int = 5) -> dict[str, Any]:
    """Ingest-to-visible delay under a steady stream, with the compactor running at its production cadence.

    A producer commits `rate` signed reactions per second to one fresh target through IngestStore in
    ticks of 100 ms; a poller asks GetSummary (canonical, `1h`, the server's clock) back to back. An
    event's delay runs from its batch's ingest call to the first answer that counts it.
    """
    import grpc

    from canal.common.v1 import types_pb2
    from canal.query.v1 import query_service_pb2 as pb
    from canal.query.v1 import query_service_pb2_grpc as pb_grpc
    from libs.config import Settings
    from libs.metrics import Tier
    from libs.nostr.keys import privkey_from_seed
    from services.compactor.rollup import compact_tier
    from services.ingest.store import IngestStore, RawItem
    from tools.demo.signing import Signer

    rng = random.Random(seed)
    target = Signer(privkey_from_seed(f"bench-fresh:{seed}:{time.time_ns()}:target"))
    actors = [Signer(privkey_from_seed(f"bench-fresh:{seed}:{time.time_ns()}:{i}")) for i in range(64)]
    note = f"{rng.getrandbits(256):064x}"
    engine = make_engine(url, pool_size=4)
    store = IngestStore(engine)
    stop = threading.Event()
    polls: list[tuple[float, int]] = []
    poll_times: list[float] = []
    settings = Settings()

    def compactor() -> None:
        last = dict.fromkeys(Tier, 0.0)
        every = {Tier.MINUTE: settings.compact_minute_every_s, Tier.HOUR: settings.compact_hour_every_s,
                 Tier.DAY: settings.compact_day_every_s, Tier.DAY8: settings.compact_day_every_s,
                 Tier.DAY64: settings.compact_day_every_s}
        while not stop.is_set():
            for tier in Tier:
                if time.monotonic() - last[tier] >= every[tier]:
                    last[tier] = time.monotonic()
                    while compact_tier(engine, tier, settings.compact_batch).buckets and not stop.is_set():
                        pass
            stop.wait(0.2)

    def poller() -> None:
        channel = grpc.insecure_channel(query_address)
        stub = pb_grpc.QueryServiceStub(channel)
        req = pb.GetSummaryRequest(pubkey=target.pubkey, window=types_pb2.WindowSpec(window="1h"),
                                   metrics=["reactions.count"])
        while not stop.is_set():
            began = time.perf_counter()
            try:
                resp = stub.GetSummary(req, timeout=10)
            except grpc.RpcError:
                continue
            done = time.perf_counter()
            poll_times.append(done - began)
            polls.append((done, int(resp.metrics[0].value)))
        channel.close()

    threads = [threading.Thread(target=compactor, daemon=True), threading.Thread(target=poller, daemon=True)]
    for t in threads:
        t.start()
    per_tick = max(1, int(rate * 0.1))
    ticks = int(seconds * 10)
    sent: list[tuple[float, int]] = []  # (ingest call start, cumulative events)
    commits: list[float] = []
    total = 0
    began = time.perf_counter()
    for i in range(ticks):
        wait = began + i * 0.1 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        now = int(time.time())
        items = []
        for k in range(per_tick):  # the nonce tag keeps every event id distinct
            ev = rng.choice(actors).sign(7, "+", [["e", note], ["p", target.pubkey], ["nonce", f"{i}.{k}"]], now - 1)
            items.append(RawItem(ev, "bench:freshness", json.dumps(ev)))
        started = time.perf_counter()
        result = store.ingest(items)
        commits.append(time.perf_counter() - started)
        total += result.count("admitted")
        sent.append((started, total))
    produced = time.perf_counter() - began
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline and (not polls or polls[-1][1] < total):
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(15)
    engine.dispose()
    delays: list[float] = []
    missing = 0
    j = 0
    for start, cumulative in sent:  # both increase, so the first poll that counts a batch only moves forward
        while j < len(polls) and not (polls[j][0] >= start and polls[j][1] >= cumulative):
            j += 1
        if j == len(polls):
            missing += 1
        else:
            delays.append(polls[j][0] - start)
    achieved = total / produced if produced > 0 else 0.0
    return {"rate_target": rate, "events": total, "achieved_rate": round(achieved, 1), "batches": len(sent),
            "events_per_batch": per_tick, "delay_ms": summarize_ms(delays), "never_seen": missing,
            "commit_ms": summarize_ms(commits), "poll_ms": summarize_ms(poll_times), "polls": len(polls)}
