"""`canal migrate` applies every migration; `--down-to` reverts to a revision (rollout: an older image)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from tests.conftest import with_database


def _migrate(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DATABASE_URL=url, DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "tools.cli.main", "migrate", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def _revision(url: str) -> str:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else ""


def test_migrate_then_down_to_a_revision_then_up_again(pg_server: str, tmp_path: Path) -> None:
    url = with_database(pg_server, f"canal_mig_{uuid.uuid4().hex[:8]}")
    done = _migrate(url, tmp_path)
    assert done.returncode == 0 and "migrations applied" in done.stdout, done.stderr
    head = _revision(url)
    assert head >= "0007"
    back = _migrate(url, tmp_path, "--down-to", "0006")
    assert back.returncode == 0 and "reverted to 0006" in back.stdout, back.stderr
    assert _revision(url) == "0006"
    assert _migrate(url, tmp_path).returncode == 0
    assert _revision(url) == head


def test_down_to_an_unknown_revision_is_one_clear_line_and_changes_nothing(pg_server: str, tmp_path: Path) -> None:
    url = with_database(pg_server, f"canal_mig_{uuid.uuid4().hex[:8]}")
    assert _migrate(url, tmp_path).returncode == 0
    head = _revision(url)
    res = _migrate(url, tmp_path, "--down-to", "nonsense")
    assert res.returncode == 2
    assert "cannot revert to 'nonsense'" in res.stderr and "nothing was changed" in res.stderr
    assert "Traceback" not in res.stderr
    assert _revision(url) == head
