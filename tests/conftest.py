"""Fixtures shared by every test layer: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess, running_server
from tests.support.services import (
    NatsServer,
    RedisServer,
    postgres_database,
    private_nats,
    private_redis,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real node on SQLite and the in-memory broker, shared by a test module.

    Tests that share it create their own applications, so they never see each other's data.
    """
    with running_server(tmp_path_factory.mktemp("node")) as proc:
        yield proc


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server_any_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real node on each database backend in turn."""
    tmp = tmp_path_factory.mktemp(f"node-{request.param}")
    if request.param == "sqlite":
        with running_server(tmp) as proc:
            yield proc
    else:
        with postgres_database() as url, running_server(tmp, database_url=url) as proc:
            yield proc


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis server that the test may stop (losing everything) and start again."""
    with private_redis() as server:
        yield server


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A private NATS server (JetStream on disk) that the test may stop and start again."""
    with private_nats(str(tmp_path_factory.mktemp("nats"))) as server:
        yield server
