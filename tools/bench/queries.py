"""Query latency through the real gRPC server (canonical vs legacy), the gateway, and a DuckDB peer."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from canal.common.v1 import types_pb2
from canal.query.v1 import query_service_pb2 as pb
from canal.query.v1 import query_service_pb2_grpc as pb_grpc
from tools.bench.profile import DAY, Profile
from tools.bench.stats import Budget, ratio, summarize_ms

ROLLING: dict[str, int | None] = {"1h": 3600, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY,
                                  "365d": 365 * DAY, "all": None}
KINDS = ("summary", "note", "counterparty", "time")
LONG = 30 * DAY  # "windows of 30 days and more"
SOURCES = {"canonical": types_pb2.SOURCE_CANONICAL, "legacy": types_pb2.SOURCE_LEGACY}


def rolling_bounds(label: str, end: int) -> tuple[int, int]:
    length = ROLLING[label]
    return (0 if length is None else max(0, end - length)), end


def granularity(label: str) -> str:
    """Day points for the time drilldown, months for `all` (days since 1970 exceed the 1,000-point cap)."""
    return "month" if label == "all" else "day"


def custom_windows(n: int, data_start: int, end: int, seed: int = 9) -> list[tuple[int, int]]:
    """Second-aligned windows inside the data: log-uniform lengths from 10 minutes to the whole span."""
    rng = random.Random(seed)
    span = end - data_start
    out = []
    for _ in range(n):
        length = int(round(600 * (span / 600) ** rng.random()))
        start = rng.randint(data_start, end - length)
        out.append((start, start + length))
    return out


class Client:
    """A synchronous stub on a real channel to the query server."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb_grpc.QueryServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def request(self, kind: str, pubkey: str, spec: types_pb2.WindowSpec, source: str,
                gran: str = "day", deadline: float | None = None) -> Callable[[], Any]:
        """A call; `deadline` None means none at all (the server then sets no statement timeout)."""
        src = SOURCES[source]
        if kind == "summary":
            req = pb.GetSummaryRequest(pubkey=pubkey, window=spec, source=src)
            return lambda: self.stub.GetSummary(req, timeout=deadline)
        dreq = pb.GetDrilldownRequest(pubkey=pubkey, window=spec, dimension=kind, page_size=50, source=src,
                                      granularity=gran if kind == "time" else "")
        return lambda: self.stub.GetDrilldown(dreq, timeout=deadline)


def spec_rolling(label: str, now: int) -> types_pb2.WindowSpec:
    return types_pb2.WindowSpec(window=label, now=now)


def spec_custom(start: int, end: int, now: int) -> types_pb2.WindowSpec:
    return types_pb2.WindowSpec(start=str(start), end=str(end), now=now)


def timed(call: Callable[[], Any], reps: int, warmup: int = 0, cap_s: float | None = None,
          min_reps: int = 2) -> tuple[list[float], Any, str | None]:
    """(seconds per call, first response, first error); stops after `cap_s` once `min_reps` are in."""
    first: Any = None
    error: str | None = None
    for _ in range(warmup):
        try:
            call()
        except grpc.RpcError:
            break
    times: list[float] = []
    began = time.perf_counter()
    for _ in range(reps):
        if cap_s is not None and len(times) >= min_reps and time.perf_counter() - began > cap_s:
            break
        t = time.perf_counter()
        try:
            resp = call()
        except grpc.RpcError as exc:
            error = error or f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
                break
            continue
        times.append(time.perf_counter() - t)
        if first is None:
            first = resp
    return times, first, error


def plan_of(resp: Any) -> dict[str, Any]:
    if resp is None:
        return {}
    meta = resp.meta
    return {"tiers": dict(meta.plan.tiers), "raw_facts_scanned": int(meta.plan.raw_facts_scanned),
            "partial": bool(meta.partial)}


def metrics_of(resp: Any) -> dict[str, int] | None:
    if resp is None or not hasattr(resp, "metrics"):
        return None
    return {m.name: int(m.value) for m in resp.metrics}


def _entry(times: list[float], resp: Any, error: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_ms": summarize_ms(times), "plan": plan_of(resp)}
    if error:
        out["error"] = error
    return out


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def rolling_latency(client: Client, pubkey: str, end: int, profile: Profile, budget: Budget,
                    kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    """Per kind and rolling window: canonical and legacy latency, speedup, and canonical == legacy (summary)."""
    out: dict[str, Any] = {}
    for kind in kinds:
        rows: dict[str, Any] = {}
        for label in ROLLING:
            spec = spec_rolling(label, end)
            gran = granularity(label)
            c_times, c_resp, c_err = timed(client.request(kind, pubkey, spec, "canonical", gran, 60.0),
                                           budget.reps(profile.canonical_reps, 5), warmup=1, cap_s=profile.rep_cap_s)
            wanted = profile.legacy_reps if kind == "summary" else profile.drill_legacy_reps
            deadline = None if kind == "summary" else profile.legacy_drill_deadline_s
            l_times: list[float] = []
            l_resp: Any = None
            l_err: str | None = "skipped (quick run)"
            if wanted:
                l_times, l_resp, l_err = timed(client.request(kind, pubkey, spec, "legacy", gran, deadline),
                                               budget.reps(wanted, 1), cap_s=profile.rep_cap_s, min_reps=1)
            row: dict[str, Any] = {"canonical": _entry(c_times, c_resp, c_err),
                                   "legacy": _entry(l_times, l_resp, l_err)}
            c50, l50 = row["canonical"]["latency_ms"].get("p50"), row["legacy"]["latency_ms"].get("p50")
            if not l_times and deadline is not None and l_err and l_err.startswith("DEADLINE_EXCEEDED"):
                l50 = min(deadline, 30.0) * 1000  # a lower bound: the legacy scan did not finish in time
                row["legacy"]["timed_out_after_ms"] = l50
                row["speedup_is_lower_bound"] = True
            row["speedup_vs_legacy_p50"] = ratio(l50, c50)
            row["canonical_over_legacy_p50"] = ratio(c50, l50)
            if kind == "summary":
                row["answers_equal"] = metrics_of(c_resp) == metrics_of(l_resp) if l_resp is not None else None
                row["metrics"] = metrics_of(c_resp)
            elif kind in ("note", "counterparty"):
                row["answers_equal"] = _rows(c_resp) == _rows(l_resp) if l_resp is not None else None
            else:
                row["answers_equal"] = _points(c_resp) == _points(l_resp) if l_resp is not None else None
            rows[label] = row
            _log(f"  {kind:<12} {label:>4}: canonical p50 {c50} ms, legacy p50 {l50} ms")
        out[kind] = rows
    return out


def _rows(resp: Any) -> list[tuple[str, tuple[tuple[str, int], ...]]] | None:
    if resp is None:
        return None
    return [(r.key, tuple(sorted(r.metrics.items()))) for r in resp.rows]


def _points(resp: Any) -> list[tuple[int, int, tuple[tuple[str, int], ...]]] | None:
    if resp is None:
        return None
    return [(r.start, r.end, tuple(sorted(r.metrics.items()))) for r in resp.rows]


def custom_latency(client: Client, pubkey: str, windows: list[tuple[int, int]], end: int, profile: Profile,
                   budget: Budget) -> dict[str, Any]:
    """Canonical summary for every custom window; legacy for the first few (paired speedups)."""
    canonical: list[float] = []
    answers: list[dict[str, int] | None] = []
    client.request("summary", pubkey, spec_custom(*windows[0], end), "canonical", deadline=60.0)()  # warm-up
    began = time.perf_counter()
    for s, e in windows:
        if time.perf_counter() - began > profile.custom_cap_s and len(canonical) >= 10:
            break
        times, resp, _ = timed(client.request("summary", pubkey, spec_custom(s, e, end), "canonical",
                                              deadline=60.0), 1)
        canonical.append(times[0] if times else float("nan"))
        answers.append(metrics_of(resp))
    legacy_rows: list[dict[str, Any]] = []
    for i, (s, e) in enumerate(windows[: min(len(canonical), budget.reps(profile.custom_legacy, 2))]):
        times, resp, err = timed(client.request("summary", pubkey, spec_custom(s, e, end), "legacy"), 1)
        if not times:
            legacy_rows.append({"window": [s, e], "error": err})
            continue
        legacy_rows.append({"window": [s, e], "days": round((e - s) / DAY, 2), "legacy_ms": round(times[0] * 1000, 3),
                            "canonical_ms": round(canonical[i] * 1000, 3),
                            "speedup": ratio(times[0], canonical[i]), "equal": metrics_of(resp) == answers[i]})
    long_rows = [r for r in legacy_rows if r.get("days", 0) >= LONG / DAY and r.get("speedup") is not None]
    valid = [t for t in canonical if t == t]
    return {
        "count": len(canonical), "planned": len(windows), "canonical_latency_ms": summarize_ms(valid),
        "legacy_sample": legacy_rows,
        "min_speedup_long": min((r["speedup"] for r in long_rows), default=None),
        "all_equal": all(r.get("equal", False) for r in legacy_rows),
        "_answers": answers, "_canonical_s": canonical,
    }


def growth_latency(client: Client, targets: Sequence[tuple[str, int]], end: int, profile: Profile,
                   budget: Budget, largest_legacy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary latency for targets of growing size over the same rolling windows (canonical and legacy).

    The largest target's legacy figures are the ones measured for the headline (`largest_legacy`,
    per window), not measured twice.
    """
    out: dict[str, Any] = {"sizes": [n for _, n in targets], "windows": {}}
    for label in ROLLING:
        per: dict[str, Any] = {}
        spec = spec_rolling(label, end)
        canonical = _round_robin([client.request("summary", pubkey, spec, "canonical", deadline=60.0)
                                  for pubkey, _ in targets], budget.reps(profile.growth_reps, 5), profile.rep_cap_s)
        for i, ((pubkey, n), (c_times, c_resp)) in enumerate(zip(targets, canonical, strict=True)):
            known = (largest_legacy or {}).get(label, {}).get("legacy", {}).get("latency_ms")
            if i == len(targets) - 1 and known:
                legacy_ms = known
            else:
                l_times, _, _ = timed(client.request("summary", pubkey, spec, "legacy"), budget.reps(2, 1),
                                      cap_s=profile.rep_cap_s, min_reps=1)
                legacy_ms = summarize_ms(l_times)
            per[str(n)] = {"canonical_ms": summarize_ms(c_times), "legacy_ms": legacy_ms, "plan": plan_of(c_resp)}
        sizes = [str(n) for _, n in targets]
        first, last = per[sizes[0]]["canonical_ms"].get("p95"), per[sizes[-1]]["canonical_ms"].get("p95")
        out["windows"][label] = {"by_size": per, "p95_largest_over_smallest": ratio(last, first),
                                 "legacy_p50_largest_over_smallest": ratio(per[sizes[-1]]["legacy_ms"].get("p50"),
                                                                           per[sizes[0]]["legacy_ms"].get("p50"))}
    flat = [w["p95_largest_over_smallest"] for w in out["windows"].values() if w["p95_largest_over_smallest"]]
    out["worst_p95_ratio"] = max(flat) if flat else None
    return out


def _round_robin(calls: Sequence[Callable[[], Any]], reps: int, cap_s: float | None) -> list[tuple[list[float], Any]]:
    """Time every call `reps` times, interleaved (call 1, 2, ..., 1, 2, ...), so that machine noise lands on
    every target alike instead of on whichever was measured during a busy moment; one warm-up each."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    first: list[Any] = [None] * len(calls)
    began = time.perf_counter()
    for _ in range(reps):
        if cap_s is not None and len(times[0]) >= 5 and time.perf_counter() - began > cap_s * len(calls):
            break
        for i, call in enumerate(calls):
            t = time.perf_counter()
            resp = call()
            times[i].append(time.perf_counter() - t)
            first[i] = resp if first[i] is None else first[i]
    return list(zip(times, first, strict=True))


# ------------------------------------------------------------------------------------------- gateway

def gateway_latency(base_url: str, secret: str, pubkey: str, end: int, profile: Profile,
                    budget: Budget) -> dict[str, Any]:
    """Canonical answers through the REST gateway (no Redis: the answer cache is bypassed).

    The gateway resolves rolling windows against its own clock, so each rolling window is sent as
    the equivalent custom window [end - length, end); `all` is sent as `window=all` (a custom window
    may not span more than 10 years).
    """
    import httpx

    out: dict[str, Any] = {}
    caches: set[str] = set()
    sources: set[str] = set()
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=120) as http:
        for kind in profile.gateway_kinds:
            rows: dict[str, Any] = {}
            for label in ROLLING:
                params: dict[str, str] = {"pubkey": pubkey}
                if label == "all":
                    params["window"] = "all"
                else:
                    s, e = rolling_bounds(label, end)
                    params.update(start=str(s), end=str(e))
                path = "/api/v2/analytics/summary"
                if kind != "summary":
                    path = "/api/v2/analytics/drilldown"
                    params["dimension"] = kind
                    if kind == "time":
                        params["granularity"] = granularity(label)
                times: list[float] = []
                error = None
                reps = budget.reps(profile.canonical_reps, 5)
                loop_began = time.perf_counter()
                for i in range(reps + 1):
                    if len(times) >= 2 and time.perf_counter() - loop_began > profile.rep_cap_s:
                        break
                    began = time.perf_counter()
                    resp = http.get(path, params=params)
                    took = time.perf_counter() - began
                    if resp.status_code != 200:
                        error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                        break
                    meta = resp.json().get("meta", {})
                    caches.add(str(meta.get("cache")))
                    sources.add(str(meta.get("source")))
                    if i >= 1:  # the first answer warms up
                        times.append(took)
                rows[label] = {"latency_ms": summarize_ms(times)}
                if error:
                    rows[label]["error"] = error
            out[kind] = rows
    return {"by_kind": out, "cache_status_seen": sorted(caches), "source_seen": sorted(sources),
            "note": "rolling windows sent as the equivalent custom windows ending at the same pinned `now` (the "
                    "gateway resolves rolling windows against its own clock); `all` as window=all (a custom window "
                    "may not span 10 years), so it ends at the real clock; the answer cache is off (CACHE_TTL_S=0, "
                    "no Redis), so every answer is computed (meta.cache = bypass)"}
