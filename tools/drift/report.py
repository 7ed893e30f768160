"""The drift report: counts per metric class, target size, window kind and dimension, the worst
cases with the exact request to reproduce each one, rendered as JSON and Markdown."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from google.protobuf.json_format import MessageToDict

from tools.drift.compare import (
    DIMENSIONS,
    METRIC_CLASSES,
    SOURCES,
    Mismatch,
    ProbeResult,
    drilldown_request,
    summary_request,
)
from tools.drift.sampling import SIZE_CLASSES, Target
from tools.drift.windows import WINDOW_KINDS

WORST_CASES: Final = 25
KEPT_MISMATCHES: Final = 5_000
KEPT_ERRORS: Final = 50
OUTCOMES: Final = ("clean", "drift", "error")
EXIT_CODES: Final = {"clean": 0, "drift": 1, "error": 2}
RPC_SERVICE: Final = "canal.query.v1.QueryService"


@dataclass
class Stats:
    """Comparisons and mismatches of one group; partial ones are counted apart and never fail."""

    comparisons: int = 0
    mismatches: int = 0
    max_abs_delta: int = 0
    partial_comparisons: int = 0
    partial_mismatches: int = 0
    partial_max_abs_delta: int = 0

    def add(self, comparisons: int, mismatches: list[Mismatch], partial: bool) -> None:
        worst = max((abs(m.delta) for m in mismatches), default=0)
        if partial:
            self.partial_comparisons += comparisons
            self.partial_mismatches += len(mismatches)
            self.partial_max_abs_delta = max(self.partial_max_abs_delta, worst)
        else:
            self.comparisons += comparisons
            self.mismatches += len(mismatches)
            self.max_abs_delta = max(self.max_abs_delta, worst)


def _groups(names: tuple[str, ...]) -> dict[str, Stats]:
    return {n: Stats() for n in names}


@dataclass
class DriftReport:
    """Everything one harness run found; `outcome` and `exit_code` decide the run."""

    params: dict[str, Any]
    targets: list[Target]
    windows: dict[str, int]
    query_addr: str
    gateway: str
    totals: Stats = field(default_factory=Stats)
    by_metric_class: dict[str, Stats] = field(default_factory=lambda: _groups(METRIC_CLASSES))
    by_size_class: dict[str, Stats] = field(default_factory=lambda: _groups(SIZE_CLASSES))
    by_window_kind: dict[str, Stats] = field(default_factory=lambda: _groups(WINDOW_KINDS))
    by_dimension: dict[str, Stats] = field(default_factory=lambda: _groups(DIMENSIONS))
    probes: int = 0
    requests: int = 0
    retried: int = 0
    transient: int = 0
    partial_reasons: Counter[str] = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)
    by_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0

    def add(self, result: ProbeResult) -> None:
        """Fold one probe's result into every group."""
        self.probes += 1
        self.requests += result.requests
        self.retried += int(result.retried)
        self.transient += int(result.transient)
        if result.error:
            self.error_count += 1
            if len(self.errors) < KEPT_ERRORS:
                self.errors.append({**self._request(result.probe, result.window), "error": result.error})
            return
        if result.partial:
            self.partial_reasons.update(result.reasons or ("unnamed",))
        total = sum(result.counts.values())
        probe = result.probe
        self.totals.add(total, result.mismatches, result.partial)
        self.by_size_class.setdefault(probe.target.size_class, Stats()).add(total, result.mismatches, result.partial)
        self.by_window_kind.setdefault(probe.window.kind, Stats()).add(total, result.mismatches, result.partial)
        self.by_dimension.setdefault(probe.dimension, Stats()).add(total, result.mismatches, result.partial)
        for cls, n in result.counts.items():
            found = [m for m in result.mismatches if m.metric_class == cls]
            self.by_metric_class.setdefault(cls, Stats()).add(n, found, result.partial)
        room = KEPT_MISMATCHES - len(self.mismatches)
        self.mismatches.extend(result.mismatches[:max(0, room)])
        self._add_target(result)

    def _add_target(self, result: ProbeResult) -> None:
        """Per drifting target: how many mismatches, the largest |delta| and which metrics."""
        failing = result.failing
        if not failing:
            return
        t = result.probe.target
        entry = self.by_target.setdefault(t.pubkey, {
            "pubkey": t.pubkey, "size_class": t.size_class, "role": t.role, "facts": t.facts, "mismatches": 0,
            "max_abs_delta": 0, "metrics": [], "window_kinds": [], "dimensions": []})
        entry["mismatches"] += len(failing)
        entry["max_abs_delta"] = max(entry["max_abs_delta"], *(abs(m.delta) for m in failing))
        seen = {"metrics": {_metric_name(m) for m in failing},
                "window_kinds": {m.probe.window.kind for m in failing},
                "dimensions": {m.probe.dimension for m in failing}}
        for name, values in seen.items():
            entry[name] = sorted(set(entry[name]) | values)

    @property
    def max_abs_delta(self) -> int:
        """Largest |canonical - legacy| outside partial answers (the alert's gauge)."""
        return self.totals.max_abs_delta

    @property
    def outcome(self) -> str:
        """`drift` on any failing delta, else `error` if a probe could not run (or nothing was compared)."""
        if self.totals.mismatches:
            return "drift"
        if self.error_count or not self.totals.comparisons + self.totals.partial_comparisons:
            return "error"
        return "clean"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def worst_cases(self, limit: int = WORST_CASES) -> list[Mismatch]:
        """The failing mismatches with the largest |delta| first (then partial ones), deterministic order."""
        def order(m: Mismatch) -> tuple[Any, ...]:
            return (m.partial, -abs(m.delta), m.probe.target.pubkey, m.window, DIMENSIONS.index(m.probe.dimension),
                    m.key, m.metric)

        return sorted(self.mismatches, key=order)[:limit]

    # --- reproduction ---------------------------------------------------------------------------

    def _request(self, probe: Any, window: tuple[int, int]) -> dict[str, Any]:
        start, end = window if window != (0, 0) else probe.window.bounds(self.params["now"])
        return {
            "pubkey": probe.target.pubkey, "target_size": probe.target.size_class, "target_role": probe.target.role,
            "window_kind": probe.window.kind, "window": probe.window.label or "custom", "start": start, "end": end,
            "now": self.params["now"], "dimension": probe.dimension, "granularity": probe.granularity,
            "tz": probe.tz, "note": probe.window.note,
        }

    def reproduce(self, m: Mismatch) -> dict[str, Any]:
        """The exact request of a mismatch: fields, curl lines (v1 legacy, v2) and grpcurl lines."""
        probe = m.probe
        request = self._request(probe, m.window)
        query: dict[str, Any] = {"pubkey": probe.target.pubkey, "start": request["start"], "end": request["end"]}
        route = "summary"
        if probe.dimension != "summary":
            route = "drilldown"
            query["dimension"] = probe.dimension
            query["limit"] = 500
            if probe.dimension == "time":
                query.update(granularity=probe.granularity, tz=probe.tz or "UTC")
        qs = urlencode(query)
        auth = '-H "Authorization: Bearer $CANAL_API_KEY"'
        curl = {v: f"curl -sS {auth} {shlex.quote(f'{self.gateway}/api/{v}/analytics/{route}?{qs}')}"
                for v in ("v1", "v2")}
        now = self.params["now"]
        grpcurl = {}
        for name, source in SOURCES.items():
            if probe.dimension == "summary":
                msg: Any = summary_request(probe, source, now)
                rpc = "GetSummary"
            else:
                msg, rpc = drilldown_request(probe, source, now), "GetDrilldown"
            body = json.dumps(MessageToDict(msg), separators=(",", ":"))
            grpcurl[name] = f"grpcurl -plaintext -d {shlex.quote(body)} {self.query_addr} {RPC_SERVICE}/{rpc}"
        return {
            **request, "metric": m.metric, "metric_class": m.metric_class, "row_key": m.key, "legacy": m.legacy,
            "canonical": m.canonical, "delta": m.delta, "partial": m.partial,
            "curl_v1": curl["v1"], "curl_v2": curl["v2"],
            "grpcurl_canonical": grpcurl["canonical"], "grpcurl_legacy": grpcurl["legacy"],
        }

    # --- rendering ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        def table(groups: dict[str, Stats]) -> dict[str, Any]:
            return {k: asdict(v) for k, v in groups.items()}

        return {
            "outcome": self.outcome, "exit_code": self.exit_code, "max_abs_delta": self.max_abs_delta,
            "params": self.params, "duration_s": round(self.duration_s, 3),
            "probes": self.probes, "requests": self.requests, "retried": self.retried, "transient": self.transient,
            "totals": asdict(self.totals),
            "by_metric_class": table(self.by_metric_class), "by_size_class": table(self.by_size_class),
            "by_window_kind": table(self.by_window_kind), "by_dimension": table(self.by_dimension),
            "windows": self.windows, "targets": [asdict(t) for t in self.targets],
            "partial_reasons": dict(sorted(self.partial_reasons.items())),
            "drifting_targets": sorted(self.by_target.values(), key=lambda e: (-e["max_abs_delta"], e["pubkey"])),
            "worst_cases": [self.reproduce(m) for m in self.worst_cases()],
            "error_count": self.error_count, "errors": self.errors,
        }

    def to_markdown(self) -> str:
        """The Markdown report (same content as the JSON, for people)."""
        when = datetime.fromtimestamp(self.params["now"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines = [
            "# Drift report: canonical vs legacy",
            "",
            f"**Outcome: {self.outcome}** (exit {self.exit_code}); max |delta| {self.max_abs_delta} "
            "(threshold 0, METRICS.md \"Drift thresholds\").",
            "",
            f"- now: {self.params['now']} ({when}); seed {self.params['seed']}; {len(self.targets)} targets; "
            f"{sum(self.windows.values())} window cases; {self.probes} probes, {self.requests} RPCs in "
            f"{self.duration_s:.1f} s",
            f"- comparisons: {self.totals.comparisons} exact + {self.totals.partial_comparisons} in partial "
            f"answers; mismatches {self.totals.mismatches} (+{self.totals.partial_mismatches} partial, not failing)",
            f"- re-asked after a mismatch: {self.retried} (transient, gone on re-ask: {self.transient}); "
            f"errors: {self.error_count}",
            f"- compared through: {self.params.get('compared_via') or self.query_addr}; reproduce against the "
            f"query service at `{self.query_addr}` and the gateway at `{self.gateway}`",
        ]
        if self.partial_reasons:
            reasons = ", ".join(f"{k} ({v})" for k, v in sorted(self.partial_reasons.items()))
            lines.append(f"- partial answers (reported, never failing): {reasons}")
        for title, groups in (("metric class", self.by_metric_class), ("target size", self.by_size_class),
                              ("window kind", self.by_window_kind), ("dimension", self.by_dimension)):
            lines += ["", f"## Per {title}", "", f"| {title} | comparisons | mismatches | max \\|delta\\| | "
                      "partial comparisons | partial mismatches | partial max \\|delta\\| |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {k} | {s.comparisons} | {s.mismatches} | {s.max_abs_delta} | {s.partial_comparisons} | "
                      f"{s.partial_mismatches} | {s.partial_max_abs_delta} |" for k, s in groups.items()]
        if self.by_target:
            lines += ["", "## Drifting targets", "", "| pubkey | size | role | mismatches | max \\|delta\\| | metrics |",
                      "|---|---|---|---:|---:|---|"]
            lines += [f"| `{e['pubkey']}` | {e['size_class']} | {e['role']} | {e['mismatches']} | "
                      f"{e['max_abs_delta']} | {', '.join(e['metrics'])} |" for e in self.to_dict()["drifting_targets"]]
        lines += ["", "## Targets", "", "| pubkey | facts | size | role |", "|---|---:|---|---|"]
        lines += [f"| `{t.pubkey}` | {t.facts} | {t.size_class} | {t.role} |" for t in self.targets]
        lines += ["", "## Worst cases", ""]
        worst = self.worst_cases()
        if not worst:
            lines.append("None: every compared value is equal on both paths.")
        for i, m in enumerate(worst, 1):
            lines += self._case_markdown(i, self.reproduce(m))
        if self.errors:
            lines += ["", "## Errors", ""]
            lines += [f"- `{e['pubkey']}` {e['window']} [{e['start']}, {e['end']}) {e['dimension']}: {e['error']}"
                      for e in self.errors]
        lines += ["", "`/api/v2` answers from the canonical path only where the feature flag routes the target "
                  "there; the grpcurl lines pick the path explicitly.", ""]
        return "\n".join(lines)

    @staticmethod
    def _case_markdown(i: int, r: dict[str, Any]) -> list[str]:
        where = f"row `{r['row_key']}` " if r["row_key"] and r["dimension"] != "kind" else ""
        if r["dimension"] == "kind":
            r = {**r, "metric": f"kind {r['row_key']} facts"}
        extra = f", granularity {r['granularity']}, tz {r['tz']}" if r["dimension"] == "time" else ""
        tag = " (partial answer, not failing)" if r["partial"] else ""
        return [
            f"### {i}. `{r['metric']}` {where}delta {r['delta']:+d}{tag}",
            "",
            f"- target `{r['pubkey']}` ({r['target_size']}, {r['target_role']}); {r['window_kind']} window "
            f"{r['window']} = [{r['start']}, {r['end']}) at now={r['now']}; dimension {r['dimension']}{extra}"
            + (f"; {r['note']}" if r["note"] else ""),
            f"- legacy {r['legacy']}, canonical {r['canonical']}",
            "",
            "```sh",
            r["curl_v1"],
            r["curl_v2"],
            r["grpcurl_legacy"],
            r["grpcurl_canonical"],
            "```",
            "",
        ]

    def summary_lines(self, limit: int = 10) -> list[str]:
        """A few lines for the job log: outcome, counts and the worst cases."""
        lines = [f"drift {self.outcome}: {self.totals.comparisons} comparisons, {self.totals.mismatches} mismatches, "
                 f"max |delta| {self.max_abs_delta}, {self.error_count} errors, {len(self.targets)} targets, "
                 f"{self.requests} RPCs in {self.duration_s:.1f} s"]
        for m in self.worst_cases(limit):
            if m.partial:
                continue
            start, end = m.window
            lines.append(f"  {m.probe.target.pubkey} {m.probe.window.kind} [{start}, {end}) {m.probe.dimension}: "
                         f"{_label(m)}: legacy {m.legacy} canonical {m.canonical} delta {m.delta:+d}")
        return lines

    def write(self, out: Path) -> tuple[Path, Path]:
        """Write `drift-report.json` and `drift-report.md` into `out`."""
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / "drift-report.json", out / "drift-report.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        md_path.write_text(self.to_markdown())
        return json_path, md_path


def _metric_name(m: Mismatch) -> str:
    """`reactions.count`, or `kind 7 facts` for the kind drilldown."""
    return f"kind {m.key} facts" if m.probe.dimension == "kind" else m.metric


def _label(m: Mismatch) -> str:
    """`reactions.count`, `kind 7 facts`, or `zaps.count@<row key>` for drilldown rows."""
    if m.probe.dimension == "kind":
        return f"kind {m.key} facts"
    return f"{m.metric}@{m.key}" if m.key else m.metric
