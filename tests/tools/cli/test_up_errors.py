"""`canal up` refuses a bad configuration with one actionable line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _up(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, "-m", "tools.cli.main", "up"], env=full, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def test_wrong_database_url_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    res = _up({"DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"},
              tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("canal:") and "stopped" not in ln]
    assert len(lines) == 1, res.stderr
    assert "DATABASE_URL" in lines[0] and "PostgreSQL" in lines[0]
    assert "secret" not in res.stderr  # the password is redacted
    assert "Traceback" not in res.stderr


def test_unreachable_redis_exits_nonzero_with_one_clear_line(tmp_path: Path, migrated_db: str) -> None:
    res = _up({"DATABASE_URL": migrated_db, "REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path)
    assert res.returncode == 2
    assert "REDIS_URL" in res.stderr and "Traceback" not in res.stderr
