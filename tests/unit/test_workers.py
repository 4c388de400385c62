"""What `--workers` accepts and refuses before any process starts (the processes themselves:
tests/integration/test_workers.py)."""

from __future__ import annotations

import os

import pytest

from xshathra.settings import Settings
from xshathra.workers import WorkersRefused, check_workers


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "count"), [(1, 1), ("3", 3), (" 2 ", 2)])
def test_worker_counts(value: object, count: int) -> None:
    assert settings(workers=value).worker_count() == count


def test_auto_is_one_per_core() -> None:
    assert settings(workers="auto").worker_count() == (os.cpu_count() or 1)
    assert settings(workers="AUTO").workers == "auto"


@pytest.mark.parametrize("value", [0, "-1", "many", ""])
def test_bad_worker_counts_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="number of processes"):
        settings(workers=value)


def test_memory_broker_refuses_several_workers() -> None:
    with pytest.raises(WorkersRefused) as refused:
        check_workers(settings(broker_url="memory://"), 2)
    message = str(refused.value)
    assert "XSHATHRA_BROKER_URL" in message and "\n" not in message


def test_one_worker_or_a_shared_broker_is_accepted() -> None:
    check_workers(settings(broker_url="memory://"), 1)
    check_workers(settings(broker_url="redis://127.0.0.1:6379/0"), 4)
    check_workers(settings(broker_url="nats://127.0.0.1:4222"), 4)

