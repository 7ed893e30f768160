"""Chaos tests (`make chaos`): real faults against real servers.

- They run only when the marker expression selects them (`pytest -m chaos`): `make test` collects
  this folder like any other, so without the marker every test here is skipped, never run.
- A small plugin writes docs/reports/chaos/chaos-report.md after a run of the whole folder: each
  test's outcome and duration, and the figures the test recorded with the `facts` fixture.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REPORT = REPO / "docs" / "reports" / "chaos" / "chaos-report.md"
_RESULTS: dict[str, dict[str, Any]] = {}
_STARTED = time.monotonic()


def _in_chaos(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def _chaos_selected(config: pytest.Config) -> bool:
    return "chaos" in (config.option.markexpr or "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _chaos_selected(config):
        return
    skip = pytest.mark.skip(reason="chaos test: runs with `make chaos` (pytest -m chaos tests/chaos)")
    for item in items:
        if _in_chaos(item):
            item.add_marker(skip)


@pytest.fixture()
def facts(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Figures a chaos test measured (lags, counts, timings); they go into the chaos report."""
    found: dict[str, Any] = {}
    request.node.user_properties.append(("facts", found))
    yield found


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/chaos/" not in report.nodeid.replace("\\", "/"):
        return
    entry = _RESULTS.setdefault(report.nodeid, {"outcome": "passed", "duration_s": 0.0, "facts": {}, "error": ""})
    entry["duration_s"] += report.duration
    for name, value in report.user_properties:
        if name == "facts" and isinstance(value, dict):
            entry["facts"] = value
    if hasattr(report, "wasxfail") and report.when == "call":  # an expected failure: a known service deviation
        entry["outcome"] = "xfailed (known deviation)" if report.skipped else "xpassed"
        entry["error"] = str(report.wasxfail)
    elif report.skipped and report.when in ("setup", "call"):
        entry["outcome"] = "skipped"
        longrepr = report.longrepr
        entry["error"] = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    elif report.failed:
        entry["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
        crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", "")
        entry["error"] = " ".join(str(crash or report.longrepr or "").split())[:500]


def _doc(session: pytest.Session, nodeid: str) -> str:
    for item in session.items:
        if item.nodeid == nodeid and isinstance(item, pytest.Function):
            doc = (item.function.__doc__ or "").strip()
            return " ".join(doc.split())
    return ""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _chaos_selected(session.config) or not _RESULTS:
        return
    ran = [r for r in _RESULTS.values() if r["outcome"] != "skipped"]
    if not ran:
        return
    collected = [i for i in session.items if _in_chaos(i)]
    target = REPORT if len(_RESULTS) == len(collected) and not session.config.option.keyword else \
        Path(os.environ.get("TMPDIR", "/tmp")) / "chaos-report.partial.md"
    target = Path(os.environ.get("CHAOS_REPORT", str(target)))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(session, time.monotonic() - _STARTED), encoding="utf-8")
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"chaos report written to {target}")


def render(session: pytest.Session, elapsed: float) -> str:
    counts: dict[str, int] = {}
    for r in _RESULTS.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    lines = [
        "# Chaos report", "",
        f"Generated {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} by `make chaos` (`pytest -m chaos tests/chaos`) on "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; the run took {elapsed:.0f} s.", "",
        "Result: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", "",
        *([os.environ["CHAOS_REPORT_NOTE"], ""] if os.environ.get("CHAOS_REPORT_NOTE") else []),
        "| test | outcome | duration |", "|---|---|---|",
    ]
    skipped: dict[str, int] = {}
    for nodeid, r in _RESULTS.items():
        if r["outcome"] == "skipped":
            skipped[r["error"] or "skipped"] = skipped.get(r["error"] or "skipped", 0) + 1
            continue
        lines.append(f"| `{nodeid.split('::')[-1]}` | {r['outcome']} | {r['duration_s']:.1f} s |")
    lines += [""] + [f"Skipped: {n} ({reason})." for reason, n in skipped.items()]
    for nodeid, r in _RESULTS.items():
        if r["outcome"] == "skipped":
            continue
        lines += ["", f"## {nodeid.split('::')[-1]}", "", f"`{nodeid}`: **{r['outcome']}** in {r['duration_s']:.1f} s.", ""]
        doc = _doc(session, nodeid)
        if doc:
            lines += [doc, ""]
        if r["error"]:
            label = "Deviation" if r["outcome"].startswith("xfail") else "Error"
            lines += [f"{label}: {r['error']}", ""]
        if r["facts"]:
            lines += ["| measured | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in r["facts"].items()]
    return "\n".join(lines) + "\n"
