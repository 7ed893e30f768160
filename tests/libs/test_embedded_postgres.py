"""The embedded PostgreSQL is sized for its machine: the tuning rules, the overrides (durability cannot be
turned off), and a real embedded server running with the computed settings, restarted once when a
restart-only setting (shared_buffers) changes and reused as it is afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from libs.config import Settings
from libs.embedded import (
    GiB,
    Machine,
    MiB,
    embedded_settings,
    parse_overrides,
    postgres_tuning,
    start_postgres,
    this_machine,
    tune_postgres,
)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_memory_settings_scale_with_the_machine_within_bounds() -> None:
    laptop = postgres_tuning(Machine(24 * GiB, 2))
    assert laptop["shared_buffers"] == "6144MB"
    assert laptop["effective_cache_size"] == "18432MB"
    assert laptop["work_mem"] == "92MB"  # (24 GB - 6 GB) / 200
    assert laptop["maintenance_work_mem"] == "1536MB"
    assert (laptop["max_parallel_workers"], laptop["max_parallel_workers_per_gather"]) == ("2", "1")

    small = postgres_tuning(Machine(GiB, 1))
    assert (small["shared_buffers"], small["work_mem"], small["maintenance_work_mem"]) == ("256MB", "4MB", "64MB")
    assert small["max_parallel_workers_per_gather"] == "1" and small["max_worker_processes"] == "8"

    big = postgres_tuning(Machine(256 * GiB, 32))
    assert (big["shared_buffers"], big["work_mem"], big["maintenance_work_mem"]) == ("8192MB", "256MB", "2048MB")
    assert (big["max_worker_processes"], big["max_parallel_workers_per_gather"]) == ("32", "4")


def test_wal_settings_suit_an_analytics_store_and_keep_commits_durable() -> None:
    tuned = postgres_tuning(Machine(8 * GiB, 4))
    assert tuned["synchronous_commit"] == "on"
    assert "fsync" not in tuned and "full_page_writes" not in tuned  # PostgreSQL's defaults: on
    assert (tuned["max_wal_size"], tuned["checkpoint_timeout"], tuned["wal_compression"]) == ("4GB", "15min", "on")
    assert postgres_tuning(Machine(8 * GiB, 4), ("pglz", "lz4", "zstd", "on", "off"))["wal_compression"] == "lz4"


def test_overrides_win_and_durability_cannot_be_turned_off() -> None:
    assert parse_overrides(" work_mem = 64MB ,jit=off") == {"work_mem": "64MB", "jit": "off"}
    assert parse_overrides("") == {}
    for unsafe in ("synchronous_commit=off", "fsync=off", "full_page_writes=false"):
        with pytest.raises(ValueError, match="acknowledged writes"):
            parse_overrides(unsafe)
    with pytest.raises(ValueError, match="name=value"):
        parse_overrides("work_mem")
    wanted = embedded_settings(settings(pg_memory_mb=2048, pg_settings="work_mem=8MB,jit=off"))
    assert (wanted["shared_buffers"], wanted["work_mem"], wanted["jit"]) == ("512MB", "8MB", "off")
    assert embedded_settings(settings(pg_tune=False, pg_settings="work_mem=8MB")) == {"work_mem": "8MB"}


def test_machine_memory_is_read() -> None:
    machine = this_machine()
    assert machine.memory_bytes >= 256 * MiB and machine.cores >= 1


@pytest.fixture()
def embedded(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    url, handle = start_postgres(tmp_path, settings())
    yield url, handle
    handle.cleanup()  # type: ignore[attr-defined]


def _show(url: str, names: list[str]) -> dict[str, int | str]:
    """Each setting as the server runs it: memory in bytes (pg_size_bytes), others as text."""
    with psycopg.connect(url, autocommit=True) as conn:
        out: dict[str, int | str] = {}
        for name in names:
            value = str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            if value[0].isdigit() and value.endswith("B"):
                out[name] = int(conn.execute("SELECT pg_size_bytes(%s)", (value,)).fetchone()[0])  # type: ignore[index]
            else:
                out[name] = value
    return out


def _bytes(value: str) -> int:
    return int(value.removesuffix("MB")) * MiB if value.endswith("MB") else int(value.removesuffix("GB")) * GiB


def _postmaster_pid(handle: Any) -> int:
    return int((Path(handle.pgdata) / "postmaster.pid").read_text().split()[0])


def test_the_embedded_server_runs_with_the_computed_settings(embedded: tuple[str, Any]) -> None:
    url, handle = embedded
    expected = postgres_tuning(this_machine())
    running = _show(url, ["shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem",
                          "max_wal_size", "synchronous_commit", "wal_compression", "checkpoint_timeout",
                          "max_parallel_workers"])
    for name in ("shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem", "max_wal_size"):
        assert running[name] == _bytes(expected[name]), name
    assert running["synchronous_commit"] == "on" and running["wal_compression"] in ("pglz", "lz4", "zstd")
    assert running["checkpoint_timeout"] == "15min"
    assert running["max_parallel_workers"] == expected["max_parallel_workers"]
    # The restart that applied shared_buffers left pgserver's handle on the live postmaster.
    assert handle.get_pid() == _postmaster_pid(handle)


def test_a_changed_restart_setting_restarts_once_and_an_unchanged_one_never(embedded: tuple[str, Any]) -> None:
    url, handle = embedded
    before = _postmaster_pid(handle)
    tune_postgres(handle, url, settings())  # same settings: reload only
    assert _postmaster_pid(handle) == before

    tune_postgres(handle, url, settings(pg_memory_mb=1024, pg_settings="work_mem=12MB"))
    after = _postmaster_pid(handle)
    assert after != before and handle.get_pid() == after
    running = _show(url, ["shared_buffers", "work_mem"])
    assert running == {"shared_buffers": 256 * MiB, "work_mem": 12 * MiB}

    tune_postgres(handle, url, settings(pg_tune=False))  # back to PostgreSQL's defaults
    assert _show(url, ["shared_buffers", "work_mem"]) == {"shared_buffers": 128 * MiB, "work_mem": 4 * MiB}


def test_the_documented_examples_are_what_the_code_computes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "postgres-tuning.md").read_text()
    table = doc.split("<!-- tuning-table -->", 1)[1].strip().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    machines = []
    for column in header[1:]:
        memory, cores = column.split(",")
        machines.append(postgres_tuning(Machine(int(memory.split()[0]) * GiB, int(cores.split()[0]))))
    rows = {}
    for line in table[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    assert set(rows) == set(machines[0])
    for name, values in rows.items():
        assert values == [m[name] for m in machines], name
