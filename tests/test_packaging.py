"""The install split, pinned: `make run` installs only what libs/, services/ and the `canal` CLI import;
tests, lint and bench tools come with their own extra (and their own make stamp); requirements.lock pins
every dependency the Dockerfile installs."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK = REPO / "requirements.lock"

# What must never reach a `make run` environment, directly or through another package.
NOT_RUNTIME = {"duckdb", "pyarrow", "playwright", "pytest", "pytest-asyncio", "hypothesis", "schemathesis",
               "kubernetes-validate", "grpcio-testing", "mypy", "ruff", "bolt11", "bitstring"}
# Runtime code is everything the `canal` console script can reach; tools/bench alone (`make bench`)
# may import the bench extra, lazily, inside the functions that need it.
RUNTIME_TREES = ("libs", "services", "tools")
BENCH_TREE = REPO / "tools" / "bench"
FIRST_PARTY = {"libs", "services", "tools", "canal", "tests"}


def requirements(extra: str | None = None) -> list[Requirement]:
    """The runtime requirements (extra None) or one extra's, from pyproject.toml."""
    raw = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def closure(reqs: list[Requirement]) -> set[str]:
    """The installed distributions `reqs` pull in, transitively (markers evaluated here, no extras)."""
    seen: set[str] = set()
    todo = [r for r in reqs if r.marker is None or r.marker.evaluate()]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            sub = Requirement(line)
            wanted = set(req.extras)
            if sub.marker is None or any(sub.marker.evaluate({**default_environment(), "extra": e})
                                         for e in wanted | {""}):
                todo.append(sub)
    return seen


@cache
def module_owners() -> dict[str, set[str]]:
    """Top-level importable name -> the distributions that install it."""
    return {mod: {canonicalize_name(d) for d in dists} for mod, dists in metadata.packages_distributions().items()}


def third_party_imports(path: Path, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every non-stdlib, non-first-party import, lazy ones included unless
    `top_level_only`; imports under `if TYPE_CHECKING:` are for the type checker only and skipped."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    for node in tree.body if top_level_only else ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        for module in modules:
            top = module.split(".", 1)[0]
            if top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "__future__":
                yield node.lineno, top


# --------------------------------------------------------------------------- pyproject


def test_runtime_dependencies_leave_out_test_lint_and_bench_tools() -> None:
    runtime = names(requirements())
    assert not runtime & NOT_RUNTIME
    assert {"pytest", "playwright", "hypothesis", "kubernetes-validate"} <= names(requirements("test"))
    assert {"mypy", "ruff"} <= names(requirements("lint"))
    assert "duckdb" in names(requirements("bench"))
    # Nothing imports pyarrow: it is in no extra at all.
    assert not any("pyarrow" in names(requirements(extra)) for extra in PROJECT["optional-dependencies"])


def test_runtime_dependencies_pull_in_no_tool_transitively() -> None:
    pulled = closure(requirements())
    assert "grpcio" in pulled and "sqlalchemy" in pulled, "the closure walk found nothing: metadata missing?"
    assert not pulled & NOT_RUNTIME


def test_license_is_an_spdx_expression_and_setuptools_reads_it() -> None:
    assert PROJECT["license"] == "MIT"
    build = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    (setuptools,) = [r for r in build if r.name == "setuptools"]
    # PEP 639 license strings need setuptools 77; an older one would warn or fail.
    assert not setuptools.specifier.contains("76.0") and setuptools.specifier.contains("77.0")


def _unsatisfied(trees: list[Path], allowed: set[str], exclude: Path | None = None,
                 uninstalled_ok: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Imports whose distributions are not in `allowed`. `uninstalled_ok`: requirement names that may be
    missing from this environment (the bench extra, which `make test` does not install)."""
    out = []
    owners = module_owners()
    for tree in trees:
        for path in sorted(tree.rglob("*.py")):
            if exclude is not None and exclude in path.parents:
                continue
            for line, module in third_party_imports(path):
                dists = owners.get(module)
                if not dists and canonicalize_name(module) in uninstalled_ok:
                    continue
                assert dists, f"{path.relative_to(REPO)}:{line}: {module} is not installed at all"
                if not dists & allowed:
                    out.append(f"{path.relative_to(REPO)}:{line} imports {module} ({', '.join(sorted(dists))})")
    return out


def test_every_runtime_import_is_a_runtime_dependency() -> None:
    runtime = closure(requirements())
    trees = [REPO / t for t in RUNTIME_TREES]
    assert _unsatisfied(trees, runtime, exclude=BENCH_TREE) == []


def test_bench_imports_only_runtime_and_bench_dependencies_and_those_lazily() -> None:
    bench = names(requirements("bench"))
    allowed = closure(requirements()) | closure(requirements("bench"))
    assert _unsatisfied([BENCH_TREE], allowed, uninstalled_ok=bench) == []
    # A bench-only package imported at module level would break `canal --help` in a runtime venv.
    runtime = closure(requirements())
    for path in sorted(BENCH_TREE.rglob("*.py")):
        for line, module in third_party_imports(path, top_level_only=True):
            if not module_owners().get(module, set()) & runtime:
                pytest.fail(f"{path.relative_to(REPO)}:{line}: import {module} inside the function that "
                            "needs it (bench extra only)")


def test_the_scan_sees_what_it_must() -> None:
    bench = {m for _, m in third_party_imports(BENCH_TREE / "duck.py")}
    assert "duckdb" in bench
    assert "duckdb" not in closure(requirements())


# --------------------------------------------------------------------------- Makefile stamps


def make_plan(target: str, venv: Path) -> str:
    """The commands `make <target>` would run with this venv (`make -n`: nothing runs)."""
    result = subprocess.run(["make", "-n", "-C", str(REPO), target, f"VENV={venv}"], capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout


pip_installs = re.compile(r"pip install -q -c requirements\.lock -e (\S+)")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


@needs_make
def test_make_run_installs_only_the_runtime(tmp_path: Path) -> None:
    assert pip_installs.findall(make_plan("run", tmp_path / "venv")) == ["."]


@needs_make
@pytest.mark.parametrize("target,extra", [("test", "test"), ("lint", "lint"), ("bench", "bench"),
                                          ("chaos", "test")])
def test_each_tool_target_adds_its_extra_after_make_run(tmp_path: Path, target: str, extra: str) -> None:
    venv = tmp_path / "venv"
    assert pip_installs.findall(make_plan(target, venv)) == [".", f"'.[{extra}]'"]
    # After `make run` (runtime stamp fresh), the target still installs its extra, and only that.
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed-runtime").touch()
    assert pip_installs.findall(make_plan(target, venv)) == [f"'.[{extra}]'"]
    (venv / f".installed-{extra}").touch()
    assert pip_installs.findall(make_plan(target, venv)) == []


# --------------------------------------------------------------------------- lockfile


@cache
def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = locked()
    every = requirements() + [r for extra in PROJECT["optional-dependencies"] for r in requirements(extra)]
    for req in every:
        name = canonicalize_name(req.name)
        if name == "canal":
            continue  # `dev` = the other extras
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]} outside {req.specifier}: run `make lock`")
    assert "canal" not in pins and "pip" not in pins


def test_lock_holds_what_the_runtime_closure_needs() -> None:
    pins = locked()
    missing = closure(requirements()) - set(pins)
    assert not missing, f"runtime packages not pinned in requirements.lock: {sorted(missing)}"


def test_image_and_make_install_through_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY pyproject.toml requirements.lock" in dockerfile
    assert re.search(r"pip install[^\n]*-c requirements\.lock", dockerfile)
    assert not re.search(r"\[(dev|test|lint|bench)\]", dockerfile), "the image installs the runtime only"
