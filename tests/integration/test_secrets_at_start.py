"""Secrets at start and at rest, on a real `xshathra serve`: an admin key or token HMAC secret
shorter than 32 bytes stops the start with a message that names the variable (never the value)
unless XSHATHRA_ALLOW_WEAK_SECRETS is set, which starts with a warning; the SQLite file that
holds the apps' secrets, and its WAL and shared-memory files, are readable by the owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.support.server import running_server

WEAK = "short-but-not-empty-secret"  # 26 bytes


@pytest.mark.parametrize(
    ("variable", "env"),
    [
        ("XSHATHRA_ADMIN_API_KEY", {"XSHATHRA_ADMIN_API_KEY": WEAK}),
        ("XSHATHRA_TOKEN_HMAC_SECRET", {"XSHATHRA_TOKEN_HMAC_SECRET": WEAK}),
        ("XSHATHRA_TOKEN_HMAC_SECRET", {"CENTRIFUGO_TOKEN_HMAC_SECRET_KEY": WEAK}),
    ],
)
def test_a_weak_secret_stops_the_start(tmp_path: Path, variable: str, env: dict[str, str]) -> None:
    with pytest.raises(RuntimeError) as failed, running_server(tmp_path, env=env):
        pass
    message = str(failed.value)
    assert "server exited with" in message
    assert variable in message and "32 bytes" in message
    assert "XSHATHRA_ALLOW_WEAK_SECRETS" in message
    assert WEAK not in message


def test_the_dev_flag_starts_with_a_warning(tmp_path: Path) -> None:
    env = {
        "XSHATHRA_ADMIN_API_KEY": WEAK,
        "XSHATHRA_TOKEN_HMAC_SECRET": WEAK,
        "XSHATHRA_ALLOW_WEAK_SECRETS": "1",
    }
    with running_server(tmp_path, env=env, admin_key=WEAK) as srv:
        r = httpx.get(f"{srv.base_url}/api/applications", headers=srv.admin_headers())
        assert r.status_code == 200, r.text
        log = srv.log()
    for variable in ("XSHATHRA_ADMIN_API_KEY", "XSHATHRA_TOKEN_HMAC_SECRET"):
        assert f"{variable} is shorter than 32 bytes" in log
    assert WEAK not in log


def test_the_sqlite_files_are_private(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        srv.create_app(name="secret holder")  # a write: the WAL and its index exist now
        db = tmp_path / "xshathra.db"
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files if p.exists()}
    assert db.name in modes and len(modes) == 3, modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


def test_an_existing_sqlite_file_is_made_private(tmp_path: Path) -> None:
    """A database created by an earlier version (world-readable) is tightened at start."""
    with running_server(tmp_path):
        pass
    db = tmp_path / "xshathra.db"
    db.chmod(0o644)
    with running_server(tmp_path):
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
