"""Every documented HTTP route fuzzed from `/openapi.json` with schemathesis (a bounded number
of examples, so the whole run stays under a minute): no answer is a 500, and every error is a
JSON object carrying `error`, in the shape of its surface."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import openapi

from tests.support.server import ServerProcess, running_server

EXAMPLES = 25  # per operation


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Generous limits: the fuzzer's many requests must reach the handlers, not the 429s.
    env = {"XSHATHRA_TOKEN_RATE_LIMIT": "100000", "XSHATHRA_AUTH_FAILURE_LIMIT": "0"}
    with running_server(tmp_path_factory.mktemp("fuzz"), env=env) as srv:
        yield srv


def test_no_route_answers_500(fuzzed: ServerProcess) -> None:
    """Each operation in turn, under hypothesis (schemathesis's pytest plugin does not run
    under this pytest; its strategies do)."""
    api = openapi.from_url(f"{fuzzed.base_url}/openapi.json")
    operations = [cast(Any, result).ok() for result in api.get_all_operations()]
    assert len(operations) > 20
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            # The admin key: every route is reachable (an app key stops most at 403/404).
            response = case.call(headers={"X-ADMIN-API-KEY": fuzzed.admin_key})
            assert response.status_code < 500, (case.method, case.path, response.text[:500])
            kind = (response.headers.get("content-type") or [""])[0]
            if response.status_code >= 400 and kind.startswith("application/json"):
                body = response.json()
                assert isinstance(body, dict) and "error" in body, (case.path, body)

        check()
    assert calls >= 3 * len(operations)  # the fuzzing happened
