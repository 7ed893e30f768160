"""The Markdown rendering of a load report (the JSON next to it holds the same figures)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report as Markdown."""
    meta = result.get("meta", {})
    lines = ["# Load test report", "",
             f"Generated {meta.get('generated_at', '-')} by `canal load` against {meta.get('base_url', '-')}.", ""]
    problems = result.get("problems") or []
    if problems and "overall" not in result:
        lines += ["**The load test could not run.**", ""] + [f"- {p}" for p in problems] + [""]
        if meta.get("setup_s"):
            lines += [f"Setup timings (s): {meta['setup_s']}", ""]
        return "\n".join(lines) + "\n"
    overall = result["overall"]
    lines += [
        f"- Suite: {meta.get('suite')}",
        f"- Budget: {meta.get('seconds_budget'):g} s or {meta.get('request_budget')} requests: a "
        f"{(result.get('baseline') or {}).get('seconds', 0):g} s baseline, then {meta.get('elapsed_s')} s of load, "
        f"on {meta.get('cores')} cores (load generator and suite on the same machine).",
        f"- Setup (s, cumulative): {meta.get('setup_s') or 'external suite, none'}",
        f"- Concurrency: {meta.get('workers')}; client timeout {meta.get('client_timeout_s'):g} s.",
        f"- Targets: demo `{result['workload']['demo_pubkey'][:16]}…`, {len(result['workload']['hot_targets'])} hot "
        f"targets, a pool of {result['workload']['target_pool']} for custom windows.",
        "",
        "## Headline",
        "",
        f"- **{overall['requests']} requests, {_fmt(overall['throughput_rps'])} req/s**, "
        f"error rate {_fmt(overall['error_rate_percent'], ' %')} ({overall['failures']} failures: 5xx or no "
        f"answer), {overall['rate_limited']} rate limited (429, not failures).",
        f"- Cache hit rate (meta.cache = hit among answers with an envelope): "
        f"{_fmt(overall['cache_hit_rate_percent'], ' %')}.",
        f"- SLO rows of docs/slo.md passed: **{overall['slo_rows_passed']}** (client-side latency, see method).",
        f"- Requests per scenario: {overall['requests_per_scenario']}.",
        "",
        "## SLO checks under load (docs/slo.md)",
        "",
    ]
    lines += _table(
        ["route", "answers", "p95 ms (target)", "p99 ms (target)", "error % (max)", "verdict"],
        [[c["route"], c["answers"], f"{_fmt(c['p95_ms'])} ({c['target_p95_ms']:g})",
          f"{_fmt(c['p99_ms'])} ({c['target_p99_ms']:g})",
          f"{_fmt(c['error_rate_percent'])} ({c['target_max_error_rate_percent']:g})",
          "pass" if c["pass"] else "FAIL: " + "; ".join(c["reasons"])] for c in result["slo"]])
    base = result.get("baseline") or {}
    if base:
        lines += ["", f"Baseline: the same rows measured first, one request at a time for {base['seconds']:g} s "
                  f"({base['requests']} requests: service time without queueing):", ""]
        lines += _table(["route", "answers", "p50 ms", "p95 ms (target)", "p99 ms (target)", "verdict"],
                        [[c["route"], c["answers"],
                          _fmt((base["latency_client_side"].get(c["route"]) or {}).get("p50_ms")),
                          f"{_fmt(c['p95_ms'])} ({c['target_p95_ms']:g})",
                          f"{_fmt(c['p99_ms'])} ({c['target_p99_ms']:g})",
                          "pass" if c["pass"] else "FAIL: " + "; ".join(c["reasons"])] for c in base["slo"]])
    lines += ["", "Objectives:", ""]
    lines += _table(["objective", "target", "measured", "answers", "verdict", "how"],
                    [[o["objective"], f"{o['target']:g} {o['unit']}", _fmt(o["measured"]), o["answers"],
                      "pass" if o["pass"] else "FAIL", o["note"]] for o in result["objectives"]])
    lines += ["", "## Per route", ""]
    lines += _table(["route", "requests", "req/s", "failures", "error %", "429", "cache", "hit %"],
                    [[r, v["requests"], v["throughput_rps"], v["failures"], v["error_rate_percent"],
                      v["rate_limited"], ", ".join(f"{k} {n}" for k, n in v["cache"].items()) or "-",
                      v["cache_hit_rate_percent"]] for r, v in result["routes"].items()])
    lines += ["", "## Latency under load, client side (request sent to answer read; answered requests; "
              "stampedes excluded)", ""]
    lines += _table(["route (cache)", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "statuses"],
                    [[k, v["requests"], v["p50_ms"], v["p95_ms"], v["p99_ms"], v["max_ms"],
                      ", ".join(f"{s}: {n}" for s, n in v["statuses"].items())]
                     for k, v in result["latency_client_side"].items()])
    server = result.get("latency_server_side") or {}
    lines += ["", "## Latency, server side (gateway histogram `canal_http_request_duration_seconds`, all cache "
              "states, interpolated within buckets)", ""]
    if server:
        lines += _table(["route (source)", "requests", "p50 ms", "p95 ms", "p99 ms"],
                        [[k, v["requests"], v["p50_ms"], v["p95_ms"], v["p99_ms"]] for k, v in server.items()])
    else:
        lines += ["(the gateway's /metrics could not be read)"]
    stampedes = result.get("stampedes") or []
    lines += ["", f"## Stampedes ({len(stampedes)} bursts of identical concurrent requests, cold window each)", ""]
    if stampedes:
        misses = [s["cache"].get("miss", 0) for s in stampedes]
        lines += [f"Computations per burst (meta.cache = miss): min {min(misses)}, max {max(misses)}; "
                  "the rest were coalesced (hit) or answered from the cache.", ""]
        lines += _table(["window", "requests", "wall ms", "cache", "statuses", "p50 ms", "p99 ms"],
                        [[s["window"], s["requests"], s["wall_ms"], s["cache"], s["statuses"], s["p50_ms"],
                          s["p99_ms"]] for s in stampedes[:12]])
    lines += [
        "", "## Method", "",
        "- Phases: a baseline (one request at a time: cold custom summary, the same again warm, rolling "
        "summary, drilldown, v1 summary) for 15 % of the budget (at most 10 s), then the load phase with every "
        "scenario at once. Headline figures and verdicts are the load phase's.",
        "- Scenarios: *hot* (largest targets, rolling 24h/7d/30d v2 summaries), *custom* (random windows to "
        "the second over the target pool: 70 % v2 summary, 30 % v2 drilldown note/counterparty), *mix* "
        "(v2 drilldowns of every dimension, v1 legacy summaries rolling and custom, v2 summaries 90d/365d), "
        "*stampede* (100 identical requests at once for a fresh custom window of the demo pubkey).",
        "- SLO rows: the plain row counts answers with `meta.cache` miss or bypass (202 job handles "
        "included), the `[cached]` row answers with `hit`; v2 answers with `source: legacy` are held to the v1 row. "
        "Error rate = (5xx + no answer) / requests of the route, in percent; 4xx are not failures.",
        "- Latency verdicts use the client-side figures: they include the loopback hop and the load "
        "generator's own event loop (one Python process driving up to 128 concurrent requests), so they are an "
        "upper bound of the server-side latency the SLO defines. The server-side histogram is reported "
        "alongside but does not separate cache hits from misses.",
        "- The SLO figures hold for the prod overlay's resources; this run shares one machine between the "
        "load generator, five services, PostgreSQL and Redis.",
    ]
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"
