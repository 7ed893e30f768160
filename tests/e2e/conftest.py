"""Fixtures of the dashboard's browser tests: the real suite, headless Chromium, guarded pages.

- `suite` (session): the whole real suite (`canal up`: every service as its own process on
  embedded PostgreSQL and Redis, demo data ingested from the local relay over websockets),
  started once, ready when the demo data is ingested and compacted, stopped after the last test
  that uses it (or at the session's end) with exit code 0 and no process of its tree left behind.
- `launch_suite`: the same for a suite with other settings (the retention test's own suite);
  every suite the selected tests need starts as soon as collection ends, in parallel, so a
  module's suite is ingesting while the tests before it run.
- `new_page`: a Chromium page that fails the test on any request leaving 127.0.0.1 or any
  uncaught page error, and saves a screenshot under tests/artifacts/ when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.e2e.suite import Suite, start_suite, stop_suite, suite_env, wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# One suite serves every test of test_dashboard.py:
# - QUERY_DEADLINE_S=1: a hung query service (SIGSTOP) turns into the stale fallback within a second;
# - SYNC_COST_LIMIT=300: rolling windows up to 365d cost ~110-200 units and answer synchronously,
#   window=all (~325 64-day blocks since 1970, ~420 units, see services/query/service.py `estimate`)
#   runs as an async job.
SUITE_SETTINGS = {"QUERY_DEADLINE_S": "1", "SYNC_COST_LIMIT": "300"}
STARTUP_TIMEOUT_S = 120  # /readyz; usually ~20 s
LOADED_TIMEOUT_S = 150  # ingest + compaction of the demo data; usually ~60 s


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests need Debian's Chromium; without it they skip and say why."""
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` "
                                   "to run the dashboard's browser tests")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


# ---------------------------------------------------------------- the suite

def wait_until_loaded(suite: Suite, timeout: float = LOADED_TIMEOUT_S) -> dict[str, Any]:
    """Wait until the demo data is ingested and compacted; returns the last 365d summary.

    The gateway names the default pubkey once ingest has facts; then the demo creator's
    zaps.count must be > 0 and unchanged for 5 s (ingest done), with the window read from
    rollups rather than raw facts (compaction caught up; the live trickle keeps a few raw).
    """
    began = time.monotonic()
    deadline = began + timeout

    def note(what: str) -> None:  # in the suite's log, for whoever wonders where the time went
        with suite.log.open("a") as f:
            f.write(f"e2e: {what} after {time.monotonic() - began:.1f} s of waiting\n")

    def default_pubkey() -> str:
        cfg = httpx.get(suite.base_url + "/ui/config.json", timeout=5).json()
        return str(cfg.get("default_pubkey") or "")

    suite.default_pubkey = wait_for(default_pubkey, timeout, "the gateway to name the demo pubkey", interval=1)
    note(f"default pubkey {suite.default_pubkey[:12]}…")
    seen: list[tuple[float, int]] = []
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = httpx.get(suite.base_url + "/api/v2/analytics/summary", headers=suite.headers, timeout=10,
                          params={"pubkey": suite.default_pubkey, "window": "365d",
                                  "metrics": "zaps.count,notes.count"})
            if r.status_code == 200:
                last = r.json()
                zaps = int(last["data"]["metrics"]["zaps.count"])
                now = time.monotonic()
                seen = [(t, z) for t, z in seen if z == zaps] + [(now, zaps)]
                raw = int(last["meta"]["plan"]["raw_facts_scanned"])
                if zaps > 0 and now - seen[0][0] >= 5 and raw <= 50:
                    note(f"demo data ingested and compacted ({zaps} zaps in 365d)")
                    return last
        time.sleep(1)
    raise AssertionError(f"the demo data was not ingested and compacted within {timeout:.0f} s (last: {last})")


def shutdown(suite: Suite) -> None:
    """Stop the suite like Ctrl-C; it must exit 0 and leave no process of its tree running."""
    for p in suite.descendants:  # a test that failed mid-SIGSTOP must not hang the shutdown
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGCONT)
    code = stop_suite(suite)
    time.sleep(0.5)
    orphans = []
    for p in suite.descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                orphans.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    data_dir = suite.env["DATA_DIR"]
    for p in psutil.process_iter(["pid", "cmdline"]):  # the embedded PostgreSQL daemonizes
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and any(data_dir in part for part in p.info["cmdline"] or ()):
                orphans.append(f"{p.pid} {' '.join(p.info['cmdline'])[:120]}")
    assert code == 0, f"canal up exited with {code}; log: {suite.log}"
    assert not orphans, f"processes left running after canal up stopped: {orphans}"


class Launcher:
    """Starts suites in the background, so a module's suite can ingest while earlier tests run.

    `start` is idempotent per name; `get` waits for the suite to be loaded; `stop` shuts it down
    (with the exit-code and orphan checks) and removes its data folder.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="suite")
        self.futures: dict[str, Future[Suite]] = {}
        self.started: dict[str, Suite] = {}

    def start(self, name: str, settings: dict[str, str]) -> Future[Suite]:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(self._launch, name, dict(settings))
        return self.futures[name]

    def _launch(self, name: str, settings: dict[str, str]) -> Suite:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = ARTIFACTS / f"suite-{name}.log"
        log.unlink(missing_ok=True)
        data = Path(tempfile.mkdtemp(prefix=f"canal-e2e-{name}-"))
        suite = start_suite(suite_env(data, **settings), log, timeout=STARTUP_TIMEOUT_S)
        self.started[name] = suite
        wait_until_loaded(suite)
        return suite

    def get(self, name: str, settings: dict[str, str]) -> Suite:
        return self.start(name, settings).result(timeout=LOADED_TIMEOUT_S + 300)

    def stop(self, name: str) -> None:
        future = self.futures.pop(name, None)
        if future is not None:
            with contextlib.suppress(Exception):
                future.result(timeout=LOADED_TIMEOUT_S + 300)  # never leave a half-started suite behind
        suite = self.started.pop(name, None)
        if suite is None:
            return
        shutdown(suite)
        shutil.rmtree(suite.env["DATA_DIR"], ignore_errors=True)

    def stop_all(self) -> None:
        for name in list(self.futures) + list(self.started):
            with contextlib.suppress(Exception):
                self.stop(name)


LAUNCHER = Launcher()
LAST_USER: dict[str, str] = {}  # suite name -> node id of the last selected test using it


def _uses_our_suite(item: pytest.Item) -> bool:
    """The test needs this conftest's `suite` (not a fixture of the same name of its own)."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).get("suite") or ()
    return bool(defs) and getattr(defs[-1].func, "__module__", "") == __name__


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start every suite the selected tests need right away, all at once.

    A test module names its own suite with `PRESTART = (name, settings)` (used by its fixture
    through `launch_suite`); the session suite starts when any test uses `suite`.
    """
    if session.config.option.collectonly or not CHROMIUM.exists():
        return
    for item in session.items:
        if item.get_closest_marker("skip"):
            continue
        wanted = getattr(getattr(item, "module", None), "PRESTART", None)
        if _uses_our_suite(item):
            wanted = ("dashboard", SUITE_SETTINGS)
        if wanted:
            LAUNCHER.start(*wanted)
            LAST_USER[wanted[0]] = item.nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a suite right after the last test that needs it, not at the end of the whole session
    (other modules in this folder run suites of their own, on the same few CPUs)."""
    for name, nodeid in list(LAST_USER.items()):
        if nodeid == item.nodeid:
            del LAST_USER[name]
            LAUNCHER.stop(name)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Whatever happened, no suite outlives the session."""
    LAUNCHER.stop_all()


@pytest.fixture(scope="session")
def launch_suite() -> Launcher:
    """The launcher: `launch_suite.get(name, settings)` a loaded suite, `launch_suite.stop(name)` after."""
    return LAUNCHER


@pytest.fixture(scope="session")
def suite() -> Iterator[Suite]:
    """The real suite shared by the dashboard tests (settings: SUITE_SETTINGS)."""
    running = LAUNCHER.get("dashboard", SUITE_SETTINGS)
    yield running
    LAUNCHER.stop("dashboard")


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright.

    Module-scoped: Playwright's sync API runs its own event loop while it is started, which must
    not overlap the asyncio tests of other modules in this folder.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def is_local(url: str) -> bool:
    """Requests the page may make: to 127.0.0.1 (any port), or in-page data:/blob: URLs of it."""
    parts = urlsplit(url)
    if parts.scheme == "data" or url == "about:blank":
        return True
    if parts.scheme == "blob":
        return is_local(url[len("blob:"):])
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname == "127.0.0.1"


def artifact_name(node: pytest.Item, suffix: str = "") -> Path:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{node.module.__name__.rsplit('.', 1)[-1]}-{node.name}")
    return ARTIFACTS / f"{base}{('-' + suffix) if suffix else ''}.png"


@pytest.fixture()
def new_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """`new_page(width=1280, height=900)`: a fresh guarded page (own context, UTC, en-US).

    At the end of the test: a full-page screenshot of the last page under tests/artifacts/,
    then the test fails if any page requested a non-local URL or raised an uncaught error.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    contexts: list[Any] = []
    pages: list[Any] = []
    outside: list[str] = []
    page_errors: list[str] = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height}, timezone_id="UTC",
                                      locale="en-US", accept_downloads=True)
        context.on("request", lambda req: None if is_local(req.url) else outside.append(req.url))
        page = context.new_page()
        page.on("pageerror", lambda err: page_errors.append(str(err)))
        page.set_default_timeout(20_000)
        contexts.append(context)
        pages.append(page)
        return page

    yield make
    if pages:
        with contextlib.suppress(Exception):
            pages[-1].screenshot(path=str(artifact_name(request.node)), full_page=True)
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()
    assert not outside, f"the page requested URLs outside 127.0.0.1: {outside}"
    assert not page_errors, f"uncaught errors in the page: {page_errors}"


@pytest.fixture()
def shot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """`shot(page, "step")`: an extra named screenshot of a test under tests/artifacts/ (whole page,
    or only what is on screen with full_page=False)."""

    def take(page: Any, suffix: str, full_page: bool = True) -> Path:
        path = artifact_name(request.node, suffix)
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take
