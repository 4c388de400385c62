"""Fixtures shared by every test layer: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real node on SQLite and the in-memory broker, shared by a test module.

    Tests that share it create their own applications, so they never see each other's data.
    """
    with running_server(tmp_path_factory.mktemp("node")) as proc:
        yield proc
