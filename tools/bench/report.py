"""Targets (pass/fail) and the Markdown report, computed from the results dict alone (no database)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tools.bench.stats import ratio

ROLLING = ("1h", "24h", "7d", "30d", "90d", "365d", "all")
LONG_WINDOWS = ("30d", "90d", "365d", "all")
KINDS = ("summary", "note", "counterparty", "time")


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, int | float) and not (isinstance(x, float) and math.isnan(x)):
        return float(x)
    return None


def _row(figure: str, value: Any, baseline: Any, ratio_: Any, target: str, passed: bool | None,
         unit: str = "", note: str = "", ratio_text: str = "") -> dict[str, Any]:
    return {"figure": figure, "value": value, "baseline": baseline, "ratio": ratio_, "ratio_text": ratio_text,
            "target": target, "pass": passed, "unit": unit, "note": note}


def _worst(rows: dict[str, Any] | None, labels: tuple[str, ...], path: tuple[str, ...],
           biggest: bool = True) -> tuple[str | None, float | None]:
    best_label, best = None, None
    for label in labels:
        v = _num(_get(rows, label, *path))
        if v is None:
            continue
        if best is None or (v > best if biggest else v < best):
            best_label, best = label, v
    return best_label, best


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows: each figure with its same-run baseline, the ratio, the target and pass/fail."""
    out: list[dict[str, Any]] = []
    facts = _get(results, "workload", "big_target_facts")
    size = f"{facts / 1e6:g}M facts" if isinstance(facts, int | float) and facts else "large target"
    summary = _get(results, "query", "grpc", "summary")
    label, p95 = _worst(summary, ROLLING, ("canonical", "latency_ms", "p95"))
    if p95 is not None and label is not None:
        legacy = _num(_get(summary, label, "legacy", "latency_ms", "p95"))
        out.append(_row(f"Summary p95 via gRPC, {size}, worst rolling window ({label})", p95, legacy,
                        ratio(legacy, p95), "<= 15 ms", p95 <= 15, "ms", "baseline: legacy raw scan p95",
                        "faster than legacy"))
    custom = _num(_get(results, "query", "custom", "canonical_latency_ms", "p95"))
    if custom is not None:
        n = _get(results, "query", "custom", "count")
        out.append(_row(f"Summary p95 via gRPC, {n} custom second-aligned windows", custom, None, None,
                        "<= 15 ms", custom <= 15, "ms"))
    gw = _get(results, "query", "gateway")
    gw_summary = _get(gw, "by_kind", "summary")
    if isinstance(gw_summary, dict):
        label, p95 = _worst(gw_summary, ROLLING, ("latency_ms", "p95"))
        if p95 is not None and label is not None:
            base = _num(_get(summary, label, "canonical", "latency_ms", "p95"))
            out.append(_row(f"Summary p95 via gateway (REST, cache off), worst window ({label})", p95, base,
                            ratio(p95, base), "<= 25 ms", p95 <= 25, "ms", "baseline: same window via gRPC",
                            "of gRPC"))
    elif gw is not None:
        out.append(_row("Summary p95 via gateway", "not measured", None, None, "<= 25 ms", None, "",
                        str(_get(gw, "reason") or "")))
    label, speed = _worst(summary, LONG_WINDOWS, ("speedup_vs_legacy_p50",), biggest=False)
    custom_speed = _num(_get(results, "query", "custom", "min_speedup_long"))
    if speed is not None and label is not None:
        c50 = _num(_get(summary, label, "canonical", "latency_ms", "p50"))
        l50 = _num(_get(summary, label, "legacy", "latency_ms", "p50"))
        worst = min(speed, custom_speed) if custom_speed is not None else speed
        note = f"worst rolling window {label}"
        if custom_speed is not None:
            note += f"; worst sampled custom window >= 30 d: {custom_speed:g}x"
        out.append(_row("Canonical vs legacy scan, summary p50, windows >= 30 days", c50, l50, speed,
                        ">= 100x faster", worst >= 100, "ms", note, "faster"))
    duck = _get(results, "query", "duckdb")
    label, dspeed = _worst(_get(duck, "rolling"), ROLLING, ("speedup_canonical_vs_duckdb",), biggest=False)
    cspeed = _num(_get(duck, "custom", "min_speedup"))
    if dspeed is not None and label is not None:
        c50 = _num(_get(summary, label, "canonical", "latency_ms", "p50"))
        d50 = _num(_get(duck, "rolling", label, "latency_ms", "p50"))
        worst = min(dspeed, cspeed) if cspeed is not None else dspeed
        note = f"worst rolling window {label}"
        if cspeed is not None:
            note += f"; worst custom window: {cspeed:g}x"
        out.append(_row("Canonical vs DuckDB Parquet scan, summary p50, every window", c50, d50, dspeed,
                        ">= 5x faster", worst >= 5, "ms", note, "faster"))
    out += _drilldown_rows(results, size)
    two = _num(_get(results, "ingest", "file", "2", "events_per_s"))
    one = _num(_get(results, "ingest", "file", "1", "events_per_s"))
    if two is not None:
        out.append(_row("Ingest, signed events/s end-to-end from a file, 2 processes", two, one, ratio(two, one),
                        ">= 15,000/s", two >= 15_000, "events/s", "baseline: 1 process", "of 1 process"))
    fresh = _num(_get(results, "freshness", "delay_ms", "p95"))
    if fresh is not None:
        commit = _num(_get(results, "freshness", "commit_ms", "p95"))
        rate = _get(results, "freshness", "rate_target")
        out.append(_row(f"Freshness p95, ingest-to-visible at {rate} events/s", fresh, commit, ratio(fresh, commit),
                        "<= 1 s", fresh <= 1000, "ms", "baseline: ingest commit p95", "of commit"))
    growth = _get(results, "query", "growth")
    worst_flat = _num(_get(growth, "worst_p95_ratio"))
    if worst_flat is not None:
        sizes = _get(growth, "sizes") or []
        lo = f"{sizes[0]:,}" if sizes else "?"
        hi = f"{sizes[-1]:,}" if sizes else "?"
        legacy_growth = [_num(_get(growth, "windows", w, "legacy_p50_largest_over_smallest")) for w in ROLLING]
        lg = max((x for x in legacy_growth if x is not None), default=None)
        out.append(_row(f"Summary p95 growth from {lo} to {hi} facts (worst window)", worst_flat, lg, None,
                        "<= 2x", worst_flat <= 2, "x", "baseline: legacy p50 growth over the same sizes"))
    out += _ingest_growth_rows(results) + _storage_rows(results)
    new = _get(results, "compaction", "new_facts")
    if _num(_get(new, "seconds")) is not None:
        out.append(_row(f"Compaction: roll {new.get('facts', 0):,} new facts through all tiers", new["seconds"],
                        None, None, "(no target)", None, "s", f"{new.get('facts_per_s')} facts/s"))
    outage = _get(results, "compaction", "outage")
    if _num(_get(outage, "seconds")) is not None:
        out.append(_row(f"Compaction catch-up after a one-day outage ({outage.get('facts', 0):,} facts)",
                        outage["seconds"], 86_400, ratio(outage["seconds"], 86_400), "(no target)", None, "s",
                        "baseline: the outage length", "of the outage"))
    equal = [_get(summary, w, "answers_equal") for w in ROLLING] if isinstance(summary, dict) else []
    custom_equal = _get(results, "query", "custom", "all_equal")
    if equal:
        ok = all(e is True for e in equal) and custom_equal is not False
        out.append(_row("Canonical answers equal the legacy scan (summary, every window measured)",
                        "equal" if ok else "DRIFT", None, None, "drift 0", ok))
    return out


def _drilldown_rows(results: dict[str, Any], size: str) -> list[dict[str, Any]]:
    """Issue 15: note/counterparty first page p95 <= 25 ms on every rolling window, >= 20x legacy for >= 7 d."""
    out: list[dict[str, Any]] = []
    for dim in ("note", "counterparty"):
        rows = _get(results, "query", "grpc", dim)
        label, p95 = _worst(rows, ROLLING, ("canonical", "latency_ms", "p95"))
        if p95 is None or label is None:
            continue
        legacy = _num(_get(rows, label, "legacy", "latency_ms", "p95"))
        out.append(_row(f"Drilldown `{dim}` first page p95 via gRPC, {size}, worst rolling window ({label})", p95,
                        legacy, ratio(legacy, p95), "<= 25 ms", p95 <= 25, "ms", "baseline: legacy raw scan p95",
                        "faster than legacy"))
        slow_label, speed = _worst(rows, ("7d", *LONG_WINDOWS), ("speedup_vs_legacy_p50",), biggest=False)
        if speed is not None and slow_label is not None:
            c50 = _num(_get(rows, slow_label, "canonical", "latency_ms", "p50"))
            l50 = _num(_get(rows, slow_label, "legacy", "latency_ms", "p50"))
            out.append(_row(f"Drilldown `{dim}` vs legacy scan, p50, windows >= 7 days", c50, l50, speed,
                            ">= 20x faster", speed >= 20, "ms", f"worst window {slow_label}", "faster"))
    return out


def _ingest_growth_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Ingest rate into the largest store against the rate into an empty one (same events, same state)."""
    points = [r for r in _get(results, "ingest", "growth") or [] if isinstance(r, dict) and _num(r.get("events_per_s"))]
    if len(points) < 2:
        return []
    empty, largest = points[0], max(points, key=lambda r: r.get("facts_before") or 0)
    slowdown = ratio(empty["events_per_s"], largest["events_per_s"])
    return [_row(f"Ingest rate at {_fmt(largest.get('facts_before'))} facts, 2 processes (baseline: the same events "
                 "into an empty store)", largest["events_per_s"], empty["events_per_s"], slowdown,
                 "slowdown <= 1.5x", slowdown is not None and slowdown <= 1.5, "events/s",
                 "checkpointed and warmed before each", "slower than at 0 facts")]


def _storage_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    st = results.get("storage")
    if not isinstance(st, dict) or not st.get("facts"):
        return []
    per = st.get("bytes_per_fact", {})
    over = _num(st.get("total_over_facts_table"))
    return [_row("Storage: on-disk bytes per fact, all tables (baseline: the facts table alone)",
                 per.get("all_tables"), per.get("facts_table"), over, "<= 1.5x the facts table",
                 over is not None and over <= 1.5, "B", "heap + indexes after VACUUM", "of the facts table")]


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _verdict(p: bool | None) -> str:
    return "—" if p is None else ("**pass**" if p else "**FAIL**")


def headline_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| figure | value | baseline | ratio | target | result |", "|---|---:|---:|---:|---|---|"]
    for r in rows:
        unit = f" {r['unit']}" if r.get("unit") and not isinstance(r["value"], str) else ""
        base_unit = unit if r.get("baseline") is not None else ""
        note = f" ({r['note']})" if r.get("note") else ""
        ratio_ = f"{_fmt(r['ratio'])}x {r.get('ratio_text', '')}".strip() if r.get("ratio") is not None else "—"
        lines.append(f"| {r['figure']}{note} | {_fmt(r['value'])}{unit} | {_fmt(r['baseline'])}{base_unit} | "
                     f"{ratio_} | {r['target']} | {_verdict(r['pass'])} |")
    return lines


def _latency_table(rows: dict[str, Any]) -> list[str]:
    lines = ["| window | canonical p50 / p95 / p99 (ms) | legacy p50 / p95 / p99 (ms) | legacy ÷ canonical (p50) | "
             "plan (64d/8d/day/hour/minute buckets, raw facts) | equal |", "|---|---:|---:|---:|---|---|"]
    for w in ROLLING:
        r = rows.get(w)
        if not isinstance(r, dict):
            continue
        c = _get(r, "canonical", "latency_ms") or {}
        lg = _get(r, "legacy", "latency_ms") or {}
        plan = _get(r, "canonical", "plan") or {}
        tiers = plan.get("tiers", {})
        plan_s = ("/".join(str(tiers.get(t, 0)) for t in ("day64", "day8", "day", "hour", "minute")) + ", "
                  f"{plan.get('raw_facts_scanned', 0)}") if plan else "—"
        speed = r.get("speedup_vs_legacy_p50")
        timed_out = _get(r, "legacy", "timed_out_after_ms")
        if timed_out and not lg.get("n"):
            legacy_cell = f"> {_fmt(timed_out)} (deadline)"
        elif _get(r, "legacy", "error") and not lg.get("n"):
            legacy_cell = str(_get(r, "legacy", "error"))[:40]
        else:
            legacy_cell = f"{_fmt(lg.get('p50'))} / {_fmt(lg.get('p95'))} / {_fmt(lg.get('p99'))}"
        speed_cell = "—" if speed is None else ("≥ " if r.get("speedup_is_lower_bound") else "") + f"{_fmt(speed)}x"
        lines.append(f"| {w} | {_fmt(c.get('p50'))} / {_fmt(c.get('p95'))} / {_fmt(c.get('p99'))} | "
                     f"{legacy_cell} | {speed_cell} | {plan_s} | {_fmt(r.get('answers_equal'))} |")
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    rows = results.get("targets") or evaluate(results)
    out = [f"# canal benchmarks ({meta.get('mode', '?')} run)", ""]
    out.append(f"- date: {meta.get('date', '?')}; commit `{meta.get('commit', '?')}`; run took "
               f"{_fmt(meta.get('duration_s'))} s")
    out.append(f"- machine: {machine.get('cores', '?')} cores ({machine.get('cpu', '?')}), "
               f"{_fmt(machine.get('memory_gb'))} GB memory; Python {machine.get('python', '?')}; "
               f"PostgreSQL {_get(meta, 'postgres', 'server_version') or '?'} (embedded, "
               f"shared_buffers {_get(meta, 'postgres', 'shared_buffers') or '?'}); DuckDB "
               f"{meta.get('duckdb', '?')}")
    wl = results.get("workload", {})
    if wl:
        build = wl.get("build", {})
        out.append(f"- workload: {_fmt(wl.get('facts'))} facts over {wl.get('days', '?')} days: one target with "
                   f"{_fmt(wl.get('big_target_facts'))} facts, growth targets {wl.get('growth_sizes')}, "
                   f"{_fmt(wl.get('tail_targets'))} tail targets ({wl.get('tail_range')} facts each), "
                   f"{_fmt(wl.get('actors'))} actors, {_fmt(wl.get('notes'))} notes; "
                   f"{'reused from the cache (built ' + str(wl.get('built_at')) + ')' if build.get('cached') else 'generated in this run'}")
    out.append(f"- load average (1/5/15 min) at start {meta.get('load_average_at_start')}, at end "
               f"{meta.get('load_average_at_end')}: other work shared the machine, so single latencies are noisy")
    out += ["", "Every figure is measured in the same run as its baseline. \"x faster\" is baseline ÷ figure; "
            "\"x of …\" is figure ÷ baseline.", "", "## Headline", ""]
    out += headline_table(rows)
    out.append("")
    notes = meta.get("notes_file")
    if notes:
        out += [f"Profiles, bounds and fix suggestions for the missed targets: [{notes}]({notes}).", ""]
    grpc_q = _get(results, "query", "grpc")
    if isinstance(grpc_q, dict):
        out += ["## Query latency through gRPC (query server in its own process, real channel, `now` pinned to the "
                "data end)",
                ""]
        if _get(results, "query", "now_note"):
            out += [f"{_get(results, 'query', 'now_note')}: `now` = {_get(results, 'query', 'now')}.", ""]
        for kind in KINDS:
            if isinstance(grpc_q.get(kind), dict):
                title = "Summary" if kind == "summary" else f"Drilldown `{kind}`" + (
                    " (day points; month for `all`)" if kind == "time" else " (first page of 50)")
                out += [f"### {title}", ""] + _latency_table(grpc_q[kind]) + [""]
    custom = _get(results, "query", "custom")
    if isinstance(custom, dict) and custom.get("canonical_latency_ms"):
        c = custom["canonical_latency_ms"]
        out += ["### Custom windows", "",
                f"{custom.get('count')} random second-aligned windows (10 minutes to the whole span): canonical "
                f"p50 {_fmt(c.get('p50'))} ms, p95 {_fmt(c.get('p95'))} ms, p99 {_fmt(c.get('p99'))} ms. "
                f"Legacy on a sample of {len(custom.get('legacy_sample', []))}: worst speedup for windows of 30 days "
                f"or more {_fmt(custom.get('min_speedup_long'))}x; answers equal: {_fmt(custom.get('all_equal'))}.", ""]
    duck = _get(results, "query", "duckdb")
    if isinstance(duck, dict) and duck.get("rolling"):
        out += ["## DuckDB peer (the large target's facts in Parquet, same summary SQL incl. exact distinct counts)", "",
                f"Export: {_fmt(_get(duck, 'export', 'rows'))} rows, {_fmt((_get(duck, 'export', 'bytes') or 0) / 1e6)} MB"
                f"; DuckDB threads {duck.get('threads')}.", "",
                "| window | DuckDB p50 / p95 (ms) | canonical p50 (ms) | DuckDB ÷ canonical | same numbers |",
                "|---|---:|---:|---:|---|"]
        for w in ROLLING:
            r = duck["rolling"].get(w)
            if isinstance(r, dict):
                lat = r.get("latency_ms", {})
                out.append(f"| {w} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} | {_fmt(r.get('canonical_p50'))} | "
                           f"{_fmt(r.get('speedup_canonical_vs_duckdb'))}x | {_fmt(r.get('equal'))} |")
        cust = duck.get("custom")
        if isinstance(cust, dict):
            out += ["", f"Custom windows: DuckDB p50 {_fmt(_get(cust, 'latency_ms', 'p50'))} ms; DuckDB ÷ canonical "
                        f"median {_fmt(cust.get('median_speedup'))}x, worst {_fmt(cust.get('min_speedup'))}x; same "
                        f"numbers on every window: {_fmt(cust.get('all_equal'))}."]
        out.append("")
    gw = _get(results, "query", "gateway")
    if isinstance(gw, dict):
        out += ["## Through the gateway (REST, uvicorn on 127.0.0.1, httpx)", ""]
        if isinstance(gw.get("by_kind"), dict):
            out += [str(gw.get("note", "")), "", "| window | " + " | ".join(f"{k} p50 / p95 (ms)" for k in KINDS) + " |",
                    "|---|" + "---:|" * len(KINDS)]
            for w in ROLLING:
                cells = []
                for k in KINDS:
                    lat = _get(gw, "by_kind", k, w, "latency_ms") or {}
                    err = _get(gw, "by_kind", k, w, "error")
                    cells.append(f"error: {err[:40]}" if err else f"{_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))}")
                out.append(f"| {w} | " + " | ".join(cells) + " |")
            out += ["", f"meta.cache seen: {gw.get('cache_status_seen')}; meta.source seen: {gw.get('source_seen')}."]
        else:
            out.append(f"Not measured: {gw.get('reason')}")
        out.append("")
    growth = _get(results, "query", "growth")
    if isinstance(growth, dict) and growth.get("windows"):
        sizes = [str(s) for s in growth.get("sizes", [])]
        out += ["## Cost growth (same windows, targets of growing size)", "",
                "| window | " + " | ".join(f"{int(s):,} facts: canonical p95 / legacy p50 (ms)" for s in sizes)
                + " | canonical p95 largest ÷ smallest |", "|---|" + "---:|" * (len(sizes) + 1)]
        for w in ROLLING:
            r = growth["windows"].get(w)
            if not isinstance(r, dict):
                continue
            cells = [f"{_fmt(_get(r, 'by_size', s, 'canonical_ms', 'p95'))} / "
                     f"{_fmt(_get(r, 'by_size', s, 'legacy_ms', 'p50'))}" for s in sizes]
            out.append(f"| {w} | " + " | ".join(cells) + f" | {_fmt(r.get('p95_largest_over_smallest'))}x |")
        out.append("")
    ing = results.get("ingest")
    if isinstance(ing, dict):
        out += ["## Ingest", ""]
        events = ing.get("events", {})
        if events:
            out.append(f"Events: {_fmt(events.get('events'))} signed events from {events.get('generator')} "
                       f"(kinds {events.get('kinds')}).")
            out.append("")
        out += ["| run | processes | events | seconds | events/s | RSS per process at the end / peak so far (MB) | "
                "outcome |", "|---|---:|---:|---:|---:|---:|---|"]
        for name, r in _ingest_rows(ing):
            if not isinstance(r, dict):
                continue
            if "error" in r or "reason" in r:
                out.append(f"| {name} | — | — | — | — | — | {r.get('error') or r.get('reason')} |")
                continue
            outcome = ", ".join(f"{k} {_fmt(r[k])}" for k in ("admitted", "duplicates", "rejected") if k in r)
            if "complete" in r:
                outcome += ("; " if outcome else "") + ("complete" if r["complete"] else "INCOMPLETE")
            out.append(f"| {name} | {r.get('processes')} | {_fmt(r.get('items'))} | {_fmt(r.get('seconds'))} | "
                       f"{_fmt(r.get('events_per_s'))} | {_fmt(r.get('rss_mb_per_process'))} / "
                       f"{_fmt(r.get('peak_rss_mb_per_process'))} | {outcome} |")
        prof = ing.get("profile")
        if isinstance(prof, dict) and prof.get("phases_s"):
            out += ["", f"cProfile of IngestStore.ingest, one thread, {prof.get('events')} events in batches of "
                        f"{_fmt(prof.get('batch', 1000))} "
                        f"({_fmt(prof.get('events_per_s_profiled'))} events/s under the profiler):", "",
                    "| phase | seconds (cumulative) |", "|---|---:|"]
            for k, v in prof["phases_s"].items():
                out.append(f"| {k} | {_fmt(v)} |")
        out.append("")
        out += _growth_section(ing.get("growth"))
    out += _storage_section(results.get("storage"))
    fresh = results.get("freshness")
    if isinstance(fresh, dict) and fresh.get("delay_ms"):
        d = fresh["delay_ms"]
        out += ["## Freshness", "",
                f"{fresh.get('events')} reactions at {fresh.get('achieved_rate')} events/s ({fresh.get('events_per_batch')}"
                f" per 100 ms commit) with the compactor at its production cadence: ingest-to-visible p50 "
                f"{_fmt(d.get('p50'))} ms, p95 {_fmt(d.get('p95'))} ms, max {_fmt(d.get('max'))} ms; commit p95 "
                f"{_fmt(_get(fresh, 'commit_ms', 'p95'))} ms; GetSummary poll p50 {_fmt(_get(fresh, 'poll_ms', 'p50'))} ms; "
                f"batches never seen: {fresh.get('never_seen')}.", ""]
    comp = results.get("compaction")
    if isinstance(comp, dict):
        out += ["## Compaction (the real compactor, every tier to clean)", "",
                "| run | facts | minute / hour / day / 8d / 64d buckets | minute / hour / day / 8d / 64d seconds | total seconds | facts/s |",
                "|---|---:|---|---|---:|---:|"]
        for name, key in (("initial workload build", "build"), ("new facts (one day)", "new_facts"),
                          ("catch-up after a one-day outage", "outage")):
            r = comp.get(key)
            if not isinstance(r, dict) or "tiers" not in r:
                continue
            t = r["tiers"]
            buckets = " / ".join(_fmt(_get(t, x, "buckets")) for x in ("minute", "hour", "day", "day8", "day64"))
            secs = " / ".join(_fmt(_get(t, x, "seconds")) for x in ("minute", "hour", "day", "day8", "day64"))
            cached = " (cached: measured when the workload was built)" if key == "build" and r.get("cached") else ""
            out.append(f"| {name}{cached} | {_fmt(r.get('facts'))} | {buckets} | {secs} | {_fmt(r.get('seconds'))} | "
                       f"{_fmt(r.get('facts_per_s'))} |")
        workers = _get(comp, "new_facts", "workers") or _get(comp, "build", "workers")
        batch = _get(comp, "new_facts", "batch") or _get(comp, "build", "batch")
        out += ["", f"{workers} compactor threads, {batch} buckets per transaction.", ""]
    out += _profiles(_get(results, "query", "profile"))
    build = _get(results, "workload", "build")
    if isinstance(build, dict) and build.get("phases_s"):
        out += ["## Workload build", "", f"Phases (s): {build['phases_s']}; total {_fmt(build.get('seconds'))} s; "
                f"sizes: " + ", ".join(f"{k} {_fmt(v.get('bytes', 0) / 1e6)} MB" for k, v in
                                       (build.get("sizes") or {}).items() if isinstance(v, dict)), ""]
    return "\n".join(out) + "\n"


def _growth_section(growth: Any) -> list[str]:
    """What the server did per event at each store size (tools.bench.ingest_growth)."""
    points = [r for r in growth or [] if isinstance(r, dict) and isinstance(r.get("server_per_event"), dict)]
    if not points:
        return []
    out = ["### Ingest as the store grows", "",
           "The same events at every size, 2 processes, after an unmeasured warm-up and a `CHECKPOINT` (the first "
           "change of a page after a checkpoint writes the whole page to the WAL). Per admitted event:", "",
           "| facts before | events/s | WAL bytes | full-page images | WAL records | blocks read (not cached) | "
           "blocks hit | facts table (MB) | facts indexes read per event |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in points:
        per = r["server_per_event"]
        reads = ", ".join(f"{k} {_fmt(v.get('read'))}" for k, v in sorted((per.get("indexes") or {}).items())
                          if k.endswith("facts") or "facts_" in k) or "—"
        out.append(f"| {_fmt(r.get('facts_before'))} | {_fmt(r.get('events_per_s'))} | {_fmt(per.get('wal_bytes'))} | "
                   f"{_fmt(per.get('wal_fpi'))} | {_fmt(per.get('wal_records'))} | {_fmt(per.get('blks_read'))} | "
                   f"{_fmt(per.get('blks_hit'))} | {_fmt((r.get('facts_bytes') or 0) / 1e6)} | {reads} |")
    return out + [""]


def _storage_section(st: Any) -> list[str]:
    if not isinstance(st, dict) or not st.get("tables"):
        return []
    facts = st.get("facts") or 0
    out = ["## Storage (the workload database, after VACUUM)", "",
           f"{_fmt(facts)} facts; all tables {_fmt(st.get('total_bytes', 0) / 1e6)} MB = "
           f"{_fmt(_get(st, 'bytes_per_fact', 'all_tables'))} B per fact, "
           f"{_fmt(st.get('total_over_facts_table'))}x the facts table "
           f"({_fmt(_get(st, 'bytes_per_fact', 'facts_table'))} B per fact).", "",
           "| table | heap + TOAST (MB) | indexes (MB) | rows (estimate) | bytes per fact | rows by tier |",
           "|---|---:|---:|---:|---:|---|"]
    tiers = st.get("rows_by_tier") or {}
    for name, t in sorted((st.get("tables") or {}).items(), key=lambda kv: -(kv[1]["heap_bytes"] + kv[1]["index_bytes"])):
        size = t["heap_bytes"] + t["index_bytes"]
        if size < 1_000_000:
            continue
        by_tier = ", ".join(f"{k} {_fmt(v)}" for k, v in (tiers.get(name) or {}).items()) or "—"
        out.append(f"| {name} | {_fmt(t['heap_bytes'] / 1e6)} | {_fmt(t['index_bytes'] / 1e6)} | "
                   f"{_fmt(t.get('rows_estimate'))} | {_fmt(size / facts if facts else None)} | {by_tier} |")
    return out + [""]


def _profiles(prof: Any) -> list[str]:
    if not isinstance(prof, dict) or not prof:
        return []
    out = ["## Profiles", ""]
    direct = prof.get("canonical_summary_direct")
    if isinstance(direct, dict) and direct:
        out += ["Canonical summary called directly (services.query.engine.summary, no gRPC), per call:", "",
                "| window | wall p50 (ms) | SQL (ms) | Python (ms) | statements | SQL by statement (ms) |",
                "|---|---:|---:|---:|---:|---|"]
        for label, r in direct.items():
            if not isinstance(r, dict):
                continue
            parts = ", ".join(f"{k} {_fmt(v)}" for k, v in (r.get("by_statement_ms_per_call") or {}).items())
            out.append(f"| {label} | {_fmt(_get(r, 'wall_ms', 'p50'))} | {_fmt(r.get('sql_ms_per_call'))} | "
                       f"{_fmt(r.get('python_ms_per_call'))} | {_fmt(r.get('statements_per_call'))} | {parts} |")
        out.append("")
    pinned = prof.get("pinned_range_joins")
    if isinstance(pinned, dict) and pinned.get("current_ms"):
        cur, fix = pinned["current_ms"], pinned.get("pinned_ms", {})
        out += [f"Suggested fix, measured: the summary's aggregate and raw-fact statements as they are vs. with each "
                f"range join pinned to one index range scan per segment (`CROSS JOIN LATERAL (... OFFSET 0)`), over "
                f"{pinned.get('windows')} windows: p50 {_fmt(cur.get('p50'))} → {_fmt(fix.get('p50'))} ms, p95 "
                f"{_fmt(cur.get('p95'))} → {_fmt(fix.get('p95'))} ms, max {_fmt(cur.get('max'))} → "
                f"{_fmt(fix.get('max'))} ms; identical rows: {_fmt(pinned.get('same_rows'))}.", ""]
    explain = _get(prof, "legacy_raw_scan_365d_explain", "plan")
    if isinstance(explain, list) and explain:
        out += ["Legacy raw scan, 365 days, `EXPLAIN (ANALYZE, BUFFERS)` (key lines):", "", "```"] + explain + ["```",
                                                                                                             ""]
    return out


def _ingest_rows(ing: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, label in (("1", "file, 1 process"), ("2", "file, 2 processes"), ("replay", "file again (duplicates)")):
        rows.append((label, _get(ing, "file", key)))
    relay = ing.get("relay")
    if isinstance(relay, dict) and ("reason" in relay or "error" in relay):
        rows.append(("LocalRelay", relay))
    elif isinstance(relay, dict):
        for key in sorted(relay):
            rows.append((f"LocalRelay, {key} process(es)", relay[key]))
    for r in ing.get("growth", []) or []:
        if isinstance(r, dict):
            rows.append((f"file, facts table at {_fmt(r.get('facts_before'))} facts", r))
    return rows


def write(out_dir: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """results.json and report.md in `out_dir` (targets computed if absent)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results.setdefault("targets", evaluate(results))
    json_path = out_dir / "results.json"
    md_path = out_dir / "report.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    md_path.write_text(render(results))
    return json_path, md_path
