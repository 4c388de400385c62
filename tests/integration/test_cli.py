"""The `xshathra` command line: apps create/list/show/delete, with `--json` printing exactly
the HTTP API's JSON, and clean errors (no tracebacks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import running_server


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "xshathra", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_apps_lifecycle_from_the_shell(tmp_path: Path) -> None:
    created = cli(tmp_path, "apps", "create", "Shop", "--app-id", "shop", "--json")
    assert created.returncode == 0, created.stderr
    body: dict[str, Any] = json.loads(created.stdout)
    assert body["success"] is True and body["application"]["app_id"] == "shop"
    assert body["application"]["api_key"] == body["application"]["server_api_key"]

    listed = json.loads(cli(tmp_path, "apps", "list", "--json").stdout)
    assert [a["app_id"] for a in listed["applications"]] == ["shop"]
    shown = json.loads(cli(tmp_path, "apps", "show", "shop", "--json").stdout)
    assert shown["application"]["name"] == "Shop" and "api_key" not in shown["application"]
    human = cli(tmp_path, "apps", "list")
    assert "shop" in human.stdout and "enabled" in human.stdout

    # The key the CLI printed works against a server on the same database.
    with running_server(tmp_path, database_url=f"sqlite:///{tmp_path / 'cli.db'}") as srv:
        r = httpx.get(
            f"{srv.base_url}/api/applications",
            headers={"X-API-Key": body["application"]["api_key"]},
        )
        assert r.status_code == 200 and r.json()["application"] == shown["application"]
        over_http = httpx.post(
            f"{srv.base_url}/api/applications", json={"name": "H"}, headers=srv.admin_headers()
        ).json()
        assert set(over_http) == set(body)
        assert set(over_http["application"]) == set(body["application"])
        http_id = over_http["application"]["app_id"]
        assert cli(tmp_path, "apps", "delete", http_id, "--yes", "--json").stdout.strip() == (
            '{\n  "success": true\n}'
        )

    deleted = cli(tmp_path, "apps", "delete", "shop", "--yes")
    assert deleted.returncode == 0
    assert json.loads(cli(tmp_path, "apps", "list", "--json").stdout)["applications"] == []


def test_cli_errors_are_clean(tmp_path: Path) -> None:
    assert cli(tmp_path, "apps", "create", "A", "--app-id", "dup").returncode == 0
    for args in (
        ("apps", "create", "B", "--app-id", "dup"),
        ("apps", "create", "C", "--app-id", "bad id!"),
        ("apps", "create", "D", "--allowed-domain", "not a domain"),
        ("apps", "create", "E", "--rate-limit", "0"),
        ("apps", "create", " "),
        ("apps", "show", "missing"),
        ("apps", "delete", "missing", "--yes"),
        ("apps", "delete", "dup"),  # no --yes and no terminal to confirm on
    ):
        result = cli(tmp_path, *args)
        assert result.returncode != 0, args
        assert "Error" in result.stderr and "Traceback" not in result.stderr
    env_bad = subprocess.run(
        [sys.executable, "-m", "xshathra", "apps", "list"],
        env={**os.environ, "XSHATHRA_DATABASE_URL": "mysql://u:hunter2@h/db"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert env_bad.returncode != 0 and "hunter2" not in env_bad.stderr
    assert "Traceback" not in env_bad.stderr
    listed = json.loads(cli(tmp_path, "apps", "list", "--json").stdout)["applications"]
    assert [a["app_id"] for a in listed] == ["dup"]  # nothing above created or deleted


def test_bad_configuration_is_one_clean_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xshathra", "apps", "create", "A"],
        env={
            **os.environ,
            "XSHATHRA_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
            "XSHATHRA_PORT": "not-a-port",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "XSHATHRA_PORT" in result.stderr and result.stdout == ""


def test_human_output(tmp_path: Path) -> None:
    created = cli(tmp_path, "apps", "create", "Human Shop", "--app-id", "hs", "--rate-limit", "5")
    assert created.returncode == 0, created.stderr
    assert "api_key" in created.stdout and "shown only now" in created.stdout
    shown = cli(tmp_path, "apps", "show", "hs")
    assert "Human Shop" in shown.stdout and "api_key_hint" in shown.stdout
    assert "rate_limit       5" in shown.stdout
    assert cli(tmp_path, "apps", "delete", "hs", "--yes").stdout.strip() == "Deleted application hs"


def test_serve_prints_the_admin_key_once(tmp_path: Path) -> None:
    """With no admin key configured, the first start generates one and prints it with URLs."""
    with running_server(tmp_path, env={"XSHATHRA_ADMIN_API_KEY": ""}) as srv:
        log = srv.log()
    assert "/docs" in log and "/socket-auth-test.html" in log
    key_line = log.split("X-ADMIN-API-KEY):", 1)[1].strip().splitlines()[0].strip()
    assert key_line.startswith("xa_")
    with running_server(tmp_path, env={"XSHATHRA_ADMIN_API_KEY": ""}) as again:
        assert key_line not in again.log()  # shown once only
        r = httpx.get(f"{again.base_url}/api/applications", headers={"X-ADMIN-API-KEY": key_line})
        assert r.status_code == 200


def test_a_deleted_app_id_cannot_be_created_again(tmp_path: Path) -> None:
    """M4: the CLI refuses a retired app_id with a clear line, as the HTTP API answers 409."""
    assert cli(tmp_path, "apps", "create", "Once", "--app-id", "once").returncode == 0
    assert cli(tmp_path, "apps", "delete", "once", "--yes").returncode == 0
    again = cli(tmp_path, "apps", "create", "Twice", "--app-id", "once")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "deleted application" in again.stderr and again.stdout == ""
